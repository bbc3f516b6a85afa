"""The relay listener: ONE TCP port per ferry process for every connector's relayed stdio.

Connectors run through the wrapper (Kubernetes and Podman pods, Docker relay mode) have their
stdin/stdout/stderr on FIFOs that relay sidecars carry over TCP to ferry. Instead of a pool of
ports (Airbyte's leaked), every sidecar of every sync in the process connects to the same port
and first sends one handshake line:

    FERRY-RELAY/1 <token> <channel>\\n       channel: stdout | stderr | stdin

`RelayListener.register()` hands out the per-connector token (secrets.token_urlsafe) and a
`RelayRegistration` whose channels are attached when their sidecar connects:
- `stdout`: a ByteReader (async read(n); b"" at EOF = the connector finished writing);
- stderr: decoded lines sent to the log callback given at registration;
- `stdin`: a ByteWriter (only for connectors that read stdin); `close()` half-closes the socket,
  the stdin relay then closes the FIFO and the connector reads EOF.
A connection whose token is unknown or expired, whose channel is not expected or already
attached, or whose first line is malformed, too long or slower than the handshake timeout is
closed and logged as a warning, never attached. The same port serves the heartbeat sidecar's HTTP
requests (see `ferry.relay.heartbeat`): the first line tells them apart.

Accepted sockets have TCP keepalive on (on Linux: idle 10 s, probes every 5 s, 3 probes, plus a
30 s TCP_USER_TIMEOUT for unacknowledged sends). A connection reset or error before a clean EOF,
and a channel that does not connect within the connection timeout, fail the read/write with
ConnectorCrashed, never a hang. An EOF on stdout does not prove success: the runtime must also get
the exit code (reported by the heartbeat sidecar, `wait_exit`, or from the
container runtime) and treat a run without one as crashed.

Data moves with plain non-blocking recv/send on the socket (no StreamReader buffering): one
kernel-to-bytes copy per read of up to 1 MiB, and TCP flow control is the backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    FerryError,
    InternalError,
    RuntimeUnavailable,
)
from ferry.relay.heartbeat import MAX_HEADER_BYTES, handle_request, is_http, response_bytes
from ferry.relay.layout import STDERR, STDIN, STDOUT
from ferry.relay.sidecars import RelayEndpoint

logger = logging.getLogger("ferry.relay")
_T = TypeVar("_T")

HANDSHAKE_MAGIC = "FERRY-RELAY/1"
MAX_FIRST_LINE = 256  # bytes, newline included, for a handshake or an HTTP request line
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 120.0
MAX_READ = 1 << 20
STDERR_READ = 1 << 16
MAX_STDERR_LINE = 1 << 16

# Where containers find the host running ferry.
DOCKER_BRIDGE_HOST = "172.17.0.1"  # a Docker container on the default bridge
PODMAN_HOST = "host.containers.internal"  # a pod played by podman
LOOPBACK_HOST = "127.0.0.1"  # host networking

ENV_BIND = "FERRY_RELAY_BIND"
ENV_PORT = "FERRY_RELAY_PORT"
DEFAULT_BIND = "0.0.0.0"

LogCallback = Callable[[str], None]


def handshake_line(token: str, channel: str) -> bytes:
    """The first line a relay sidecar sends."""
    return f"{HANDSHAKE_MAGIC} {token} {channel}\n".encode("ascii")


def _redact(token: str) -> str:
    return token[:4] + "..." if len(token) > 4 else "..."


def _valid_token(token: str) -> bool:
    return 0 < len(token) <= 128 and all(c.isalnum() or c in "-_" for c in token)


@dataclass(frozen=True)
class KeepAlive:
    """TCP keepalive of accepted relay sockets (the timings apply on Linux only)."""

    idle: int = 10
    interval: int = 5
    count: int = 3
    user_timeout_ms: int = 30_000

    def apply(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if sys.platform == "linux":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, self.interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, self.count)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.user_timeout_ms)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Channel:
    """One relayed stream of one connector: a socket attached when its sidecar connects."""

    def __init__(self, registration: RelayRegistration, name: str) -> None:
        self._registration = registration
        self._loop = registration._loop
        self.name = name
        self._connected = asyncio.Event()
        self._sock: socket.socket | None = None
        self._prefix = b""
        self._error: FerryError | None = None
        self._armed: tuple[int, bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.eof = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _attach(self, sock: socket.socket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix
        self._connected.set()

    async def _ready(self) -> socket.socket:
        """The socket once the sidecar connected; ConnectorCrashed after the deadline or abort."""
        while True:
            if self._error is not None:
                raise self._error
            if self._sock is not None:
                return self._sock
            timeout = self._registration._connect_remaining()
            if timeout is not None and timeout <= 0:
                raise self._fail(self._registration._not_connected_error(self.name))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), timeout)

    async def _wait_io(self, sock: socket.socket, writable: bool) -> None:
        fd = sock.fileno()
        if fd < 0 or self._error is not None:
            raise self._error or self._lost(OSError("socket closed"))
        fut = self._loop.create_future()
        self._waiter = fut
        if writable:
            self._loop.add_writer(fd, _wake, fut)
        else:
            self._loop.add_reader(fd, _wake, fut)
        self._armed = (fd, writable)
        try:
            await fut
        finally:
            self._disarm()
            self._waiter = None

    async def _io(self, sock: socket.socket, call: Callable[[], _T], *, writable: bool) -> _T:
        """`call` (one recv or send on the non-blocking `sock`) once it does not block; any other
        OSError is the relay connection lost."""
        while True:
            try:
                return call()
            except (BlockingIOError, InterruptedError):
                await self._wait_io(sock, writable)
            except OSError as exc:
                raise self._lost(exc) from exc

    def _disarm(self) -> None:
        if self._armed is not None:
            fd, writable = self._armed
            self._armed = None
            if writable:
                self._loop.remove_writer(fd)
            else:
                self._loop.remove_reader(fd)

    def _lost(self, exc: BaseException) -> FerryError:
        if self._error is not None:
            return self._error
        return self._fail(ConnectorCrashed(f"{self._registration.name}: {self._broke(exc)}"))

    def _broke(self, exc: BaseException) -> str:
        """What a broken connection means for this channel."""
        return (
            f"the {self.name} relay connection broke before a clean end ({exc}); the "
            "connector's container or its relay sidecar is gone"
        )

    def _fail(self, error: FerryError) -> FerryError:
        """Fail the channel for good: wake every waiter with `error` and close the socket."""
        if self._error is None:
            self._error = error
        self._disarm()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._error)
        self._connected.set()
        self._close_socket()
        return self._error

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._disarm()
            self._sock.close()


class RelayReader(_Channel):
    """A connector's relayed output (stdout, stderr): a ByteReader."""

    async def read(self, n: int) -> bytes:
        """Up to n bytes (at most 1 MiB per call); b"" only at a clean end of stream."""
        if n <= 0:
            raise InternalError("read() needs n > 0")
        sock = self._sock
        if sock is None or self._error is not None:
            sock = await self._ready()
        if self._prefix:
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        data = await self._io(sock, functools.partial(sock.recv, min(n, MAX_READ)), writable=False)
        if not data:
            self.eof = True
        return data


class RelayWriter(_Channel):
    """A connector's relayed stdin: a ByteWriter."""

    def __init__(self, registration: RelayRegistration, name: str) -> None:
        super().__init__(registration, name)
        self.closed = False

    def _attach(self, sock: socket.socket, prefix: bytes) -> None:
        super()._attach(sock, prefix)
        if self.closed:
            self._shutdown()

    async def write(self, data: bytes) -> None:
        """Write all of data; waits while the connector is behind (TCP backpressure)."""
        if self.closed:
            raise InternalError(f"{self._registration.name}: write to stdin after close()")
        sock = self._sock
        if sock is None or self._error is not None:
            sock = await self._ready()
        view = memoryview(data)
        while view:
            sent = await self._io(sock, functools.partial(sock.send, view), writable=True)
            view = view[sent:]

    async def close(self) -> None:
        """Give the connector EOF (now, or as soon as the relay connects). Idempotent, never raises."""
        if self.closed:
            return
        self.closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None and self._error is None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)

    def _broke(self, exc: BaseException) -> str:
        return (
            f"the stdin relay connection broke ({exc}); the connector stopped reading its input "
            "(it may have exited) or its container is gone"
        )


class RelayRegistration:
    """One connector's relayed channels, identified by its token. Created by `register()`."""

    def __init__(
        self,
        listener: RelayListener,
        *,
        token: str,
        name: str,
        reads_stdin: bool,
        log: LogCallback,
        connect_timeout: float | None,
    ) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self.token = token
        self.name = name
        self.reads_stdin = reads_stdin
        self._log = log
        self.stdout = RelayReader(self, STDOUT)
        self.stdin: RelayWriter | None = RelayWriter(self, STDIN) if reads_stdin else None
        self._stderr = RelayReader(self, STDERR)
        self._stderr_done = asyncio.Event()
        self._stderr_task: asyncio.Task[None] | None = None
        self._exit_code: int | None = None
        self._exit_reported = asyncio.Event()
        self.last_heartbeat: float | None = None
        self._connect_timeout = connect_timeout
        self._connect_deadline: float | None = None
        self.set_connect_timeout(connect_timeout)
        self.closed = False

    # -- what runtimes use --------------------------------------------------------------------

    def set_connect_timeout(self, timeout: float | None) -> None:
        """Channels must connect within `timeout` seconds from now (None: wait indefinitely).

        E.g. None while a pod is being scheduled/pulled, then a short timeout once it runs.
        """
        self._connect_timeout = timeout
        self._connect_deadline = None if timeout is None else self._loop.time() + timeout
        for channel in self._channels():
            channel._connected.set()  # wake waiters so they re-read the deadline
            if channel._sock is None and channel._error is None:
                channel._connected.clear()

    @property
    def exit_code(self) -> int | None:
        """The exit code the heartbeat sidecar reported, if any."""
        return self._exit_code

    async def wait_exit(self, within: float | None) -> int | None:
        """The reported exit code, waiting up to `within` seconds; None if none arrived."""
        if self._exit_code is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_reported.wait(), within)
        return self._exit_code

    async def wait_stderr(self) -> None:
        """Return once stderr reached EOF and every line went to the log callback.

        Raises ConnectorCrashed if the stderr relay never connected or broke mid-stream.
        """
        await self._stderr._ready()
        await self._stderr_done.wait()
        if self._stderr._error is not None:
            raise self._stderr._error

    def connected(self) -> dict[str, bool]:
        """Which channels have their relay attached."""
        return {channel.name: channel.connected for channel in self._channels()}

    def abort(self, error: FerryError) -> None:
        """Fail every channel with `error` (e.g. the runtime saw the pod fail): no read/write hangs."""
        for channel in self._channels():
            channel._fail(error)

    # -- heartbeat endpoint -------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.last_heartbeat = self._loop.time()

    def report_exit(self, code: int) -> None:
        self.last_heartbeat = self._loop.time()
        if self._exit_code is None:
            self._exit_code = code
            self._exit_reported.set()

    # -- internals ----------------------------------------------------------------------------

    def _channels(self) -> list[_Channel]:
        channels: list[_Channel] = [self.stdout, self._stderr]
        if self.stdin is not None:
            channels.append(self.stdin)
        return channels

    def _connect_remaining(self) -> float | None:
        if self._connect_deadline is None:
            return None
        return self._connect_deadline - self._loop.time()

    def _not_connected_error(self, channel: str) -> ConnectorCrashed:
        return ConnectorCrashed(
            f"{self.name}: its {channel} relay did not connect to ferry within "
            f"{self._connect_timeout:g}s; check that its containers started and can reach ferry's "
            f"relay port {self._listener.port} (advertised host, firewall, network policy)"
        )

    def _attach(self, channel: str, sock: socket.socket, prefix: bytes) -> str | None:
        """Attach a sidecar's connection; a reason string if it must be refused."""
        if self.closed:
            return "the token has expired"
        target: _Channel | None = {
            STDOUT: self.stdout,
            STDERR: self._stderr,
            STDIN: self.stdin,
        }.get(channel)
        if target is None:
            return f"{self.name} does not read stdin"
        if target.connected:
            return f"{channel} of {self.name} is already attached"
        if target._error is not None:
            return f"{channel} of {self.name} has already failed ({target._error})"
        target._attach(sock, prefix)
        logger.debug("%s: its %s relay connected", self.name, channel)
        if channel == STDERR:
            self._stderr_task = self._loop.create_task(self._pump_stderr())
        return None

    async def _pump_stderr(self) -> None:
        pending = b""
        try:
            while True:
                chunk = await self._stderr.read(STDERR_READ)
                if not chunk:
                    break
                pending += chunk
                if b"\n" in chunk:
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._emit(line)
                while len(pending) > MAX_STDERR_LINE:
                    self._emit(pending[:MAX_STDERR_LINE])
                    pending = pending[MAX_STDERR_LINE:]
        except FerryError:
            pass  # recorded on the channel; wait_stderr() raises it
        finally:
            if pending:
                self._emit(pending)
            self._stderr_done.set()

    def _emit(self, line: bytes) -> None:
        try:
            self._log(line.rstrip(b"\r").decode("utf-8", errors="replace"))
        except Exception:
            logger.exception("relay: the stderr log callback of %s failed", self.name)

    def _close(self, reason: str) -> None:
        self.closed = True
        error = ConnectorCrashed(f"{self.name}: {reason}")
        for channel in self._channels():
            if channel._error is None:
                channel._fail(error)
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()
        self._stderr_done.set()


class RelayListener:
    """The relay + heartbeat port. Use `shared_listener()` for the process-wide one."""

    def __init__(
        self,
        *,
        bind_host: str = DEFAULT_BIND,
        port: int = 0,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        keepalive: KeepAlive | None = None,
        backlog: int = 256,
    ) -> None:
        self.bind_host = bind_host
        self._requested_port = port
        self.handshake_timeout = handshake_timeout
        self.keepalive = keepalive or KeepAlive()
        self._backlog = backlog
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._registrations: dict[str, RelayRegistration] = {}
        self.closed = False

    async def start(self) -> None:
        """Bind and listen (idempotent). Raises RuntimeUnavailable if the port cannot be bound."""
        if self.closed:
            raise RuntimeUnavailable("the relay listener is closed")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self.bind_host,
                self._requested_port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise RuntimeUnavailable(
                f"cannot listen for relays on {self.bind_host}:{self._requested_port}: {exc}"
            ) from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise RuntimeUnavailable(
                f"cannot listen for relays on {self.bind_host}:{self._requested_port}: {exc} "
                f"(set {ENV_BIND}/{ENV_PORT})"
            ) from exc
        self._sock = sock
        self._loop = loop
        self._accept_task = loop.create_task(self._accept_loop(loop, sock))

    @property
    def port(self) -> int:
        if self._sock is None:
            raise InternalError("the relay listener is not started")
        return int(self._sock.getsockname()[1])

    def endpoint(self, host: str) -> RelayEndpoint:
        """What a sidecar connects to, given the host name containers use for ferry's machine."""
        return RelayEndpoint(host=host, port=self.port)

    def register(
        self,
        name: str,
        *,
        reads_stdin: bool,
        log: LogCallback,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> RelayRegistration:
        """A new token and the channels of one connector run (`name` is used in messages)."""
        if self._sock is None or self.closed:
            raise InternalError("register() needs a started relay listener")
        token = secrets.token_urlsafe(32)
        registration = RelayRegistration(
            self,
            token=token,
            name=name,
            reads_stdin=reads_stdin,
            log=log,
            connect_timeout=connect_timeout,
        )
        self._registrations[token] = registration
        return registration

    def unregister(self, token: str) -> None:
        """Expire a token: later connections and heartbeats are refused (410), channels close."""
        registration = self._registrations.pop(token, None)
        if registration is not None:
            registration._close("its relay registration was withdrawn")

    def registration(self, token: str) -> RelayRegistration | None:
        return self._registrations.get(token)

    async def close(self) -> None:
        """Stop listening, close every connection and expire every token. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._accept_task is not None:
            self._accept_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        pending = [t for t in (self._accept_task, *self._tasks) if t is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        for token in list(self._registrations):
            registration = self._registrations.pop(token)
            registration._close("ferry's relay listener was closed")

    async def __aenter__(self) -> RelayListener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections --------------------------------------------------------------------------

    async def _accept_loop(self, loop: asyncio.AbstractEventLoop, listening: socket.socket) -> None:
        while True:
            try:
                conn, address = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                logger.warning("relay: accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            conn.setblocking(False)
            try:
                self.keepalive.apply(conn)
            except OSError as exc:
                logger.warning("relay: cannot set keepalive on a connection: %s", exc)
            task = loop.create_task(self._serve(conn, address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket, address: object) -> None:
        peer = _peer(address)
        attached = False
        try:
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    line, rest = await self._first_line(conn)
                    if is_http(line):
                        await self._serve_http(conn, line, rest)
                        return
            except TimeoutError:
                self._reject(peer, f"no complete first line within {self.handshake_timeout:g}s")
                return
            except _Refused as refused:
                self._reject(peer, str(refused))
                return
            except OSError as exc:
                self._reject(peer, f"connection error during the handshake: {exc}")
                return
            reason = self._attach(line, rest, conn)
            if reason is not None:
                self._reject(peer, reason)
                return
            attached = True
        finally:
            if not attached:
                conn.close()

    async def _first_line(self, conn: socket.socket) -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        buffer = b""
        while b"\n" not in buffer:
            if len(buffer) >= MAX_FIRST_LINE:
                raise _Refused(f"first line longer than {MAX_FIRST_LINE} bytes")
            chunk = await loop.sock_recv(conn, 4096)
            if not chunk:
                raise _Refused("closed before sending a complete first line")
            buffer += chunk
        line, _, rest = buffer.partition(b"\n")
        if len(line) + 1 > MAX_FIRST_LINE:
            raise _Refused(f"first line longer than {MAX_FIRST_LINE} bytes")
        return line.rstrip(b"\r"), rest

    async def _serve_http(self, conn: socket.socket, line: bytes, rest: bytes) -> None:
        loop = asyncio.get_running_loop()
        # Read the headers, so that closing does not reset the connection under the response.
        headers = b"\n" + rest
        while b"\n\r\n" not in headers and b"\n\n" not in headers:
            if len(headers) > MAX_HEADER_BYTES:
                raise _Refused("HTTP headers too long")
            chunk = await loop.sock_recv(conn, 4096)
            if not chunk:
                break
            headers += chunk
        status, body = handle_request(line, self.registration)
        if status >= 400 and status != 410:
            logger.warning("relay: HTTP %d for %r: %s", status, _redact_line(line), body)
        await loop.sock_sendall(conn, response_bytes(status, body))
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)

    def _attach(self, line: bytes, rest: bytes, conn: socket.socket) -> str | None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return "malformed handshake (not ASCII)"
        parts = text.split(" ")
        if len(parts) != 3 or parts[0] != HANDSHAKE_MAGIC:
            return f"malformed handshake (expected '{HANDSHAKE_MAGIC} <token> <channel>')"
        _, token, channel = parts
        if channel not in (STDOUT, STDERR, STDIN):
            return f"unknown channel {channel[:16]!r}"
        if not _valid_token(token):
            return "malformed token"
        registration = self._registrations.get(token)
        if registration is None:
            return f"unknown or expired token {_redact(token)} ({channel})"
        return registration._attach(channel, conn, rest)

    @staticmethod
    def _reject(peer: str, reason: str) -> None:
        logger.warning("relay: refused a connection from %s: %s", peer, reason)


class _Refused(Exception):
    pass


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _redact_line(line: bytes) -> str:
    text = line.decode("ascii", errors="replace")
    parts = text.split("/")
    return "/".join(_redact(p) if _valid_token(p) and len(p) > 20 else p for p in parts)


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RelayListener] = (
    weakref.WeakKeyDictionary()
)


async def shared_listener() -> RelayListener:
    """The process-wide relay listener, started on first use.

    It binds FERRY_RELAY_BIND (default 0.0.0.0, so containers on a bridge or in a cluster reach
    it) and FERRY_RELAY_PORT (default 0: any free port). One per event loop, in practice one per
    ferry process; every runtime and every sync shares it.
    """
    loop = asyncio.get_running_loop()
    listener = _shared.get(loop)
    if listener is None or listener.closed:
        raw_port = os.environ.get(ENV_PORT, "0") or "0"
        if not raw_port.isdigit() or int(raw_port) > 65535:
            raise ConfigError(
                f"{ENV_PORT} must be a port number (0 for any free port): {raw_port!r}"
            )
        listener = RelayListener(
            bind_host=os.environ.get(ENV_BIND) or DEFAULT_BIND, port=int(raw_port)
        )
        _shared[loop] = listener
    await listener.start()
    return listener
