"""The pump container of a single pod: ferry's own routing between the connectors' FIFOs.

    python -m ferry.engine.pod_pump        (the command of the `pump` container, FERRY_IMAGE)

The source and destination containers run their images under ferry's wrapper with their stdio on
FIFOs in `<FERRY_PUMP_DIR>/source` and `<FERRY_PUMP_DIR>/destination` (one emptyDir). This program
runs the very same attempt as a local sync (`ferry.engine.sync.Attempt`: SourceRouter, stream
statuses, exit checks) on those FIFOs, and sends everything the launching ferry must know as the
control stream (`ferry.engine.control`) over ferry's relay port: the `stdout` channel carries the
events, `stdin` the launching ferry's commands, `stderr` this program's own log. States are
committed by the launching ferry alone, on the echoes it receives.

There is no heartbeat sidecar in this pod: this program checks that the launching ferry is still
there, as that sidecar does elsewhere (`GET /heartbeat/<token>` on ferry's relay port every
interval; a 410, or as many failed probes in a row as the settings allow, means ferry is gone),
and a broken control connection or its commands channel ending says the same at once. Then, or
when this container gets SIGTERM, both connectors are stopped (their wrappers' termination
markers). The exit code goes to `<FERRY_PUMP_DIR>/exit`: 0 once the end event was sent; any
other is also reported to ferry (`GET /exit/<token>/<code>`).

Settings (environment): FERRY_PUMP_DIR, FERRY_PUMP_CATALOG (the configured catalog file),
FERRY_PUMP_RELAY (`host:port`), FERRY_PUMP_TOKEN, FERRY_PUMP_HEARTBEAT (`<interval seconds>
<probe timeout seconds> <failures>`, default the heartbeat sidecar's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ferry.engine.control import (
    STOP_COMMAND,
    Event,
    Totals,
    encode_event,
    error_events,
    state_event,
    stats_event,
)
from ferry.engine.ledger import PendingState, StateLedger
from ferry.engine.pump import complete_lines
from ferry.engine.sync import Attempt, AttemptPlan
from ferry.errors import FerryError, ProtocolViolation
from ferry.protocol import encode
from ferry.protocol.messages import (
    AirbyteMessage,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
)
from ferry.relay import (
    EXIT_FILE,
    TERMINATE_FILE,
    HeartbeatSettings,
    exit_path,
    handshake_line,
    heartbeat_path,
    request_status,
)
from ferry.runtimes.base import ConnectorProcess, ConnectorRef, Role, RunLabels
from ferry.runtimes.fifo import FifoProcess, prepare_fifos

logger = logging.getLogger("ferry.pump")

STATS_INTERVAL = 1.0
ENV_HEARTBEAT = "FERRY_PUMP_HEARTBEAT"
# glibc's mallopt parameters, and what the pump sets them to (see keep_heap)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20


class ControlChannel:
    """Events to the launching ferry, in order, over one socket; `send` never blocks."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.lost = asyncio.Event()  # the launching ferry is gone
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._flush())

    def send(self, event: Event) -> None:
        self._queue.append(encode_event(event))
        self._ready.set()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue and not self.lost.is_set():
                batch = b"".join(self._queue)
                self._queue.clear()
                try:
                    await loop.sock_sendall(self._sock, batch)
                except OSError as e:
                    self.lose(f"the control connection to ferry broke ({e})")
            if self._closed:
                return

    def lose(self, reason: str) -> None:
        """The launching ferry is gone (`reason`): nothing more is sent, the connectors stop."""
        if not self.lost.is_set():
            logger.error("%s: stopping", reason)
            self.lost.set()

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        await self._task
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)


class ForwardingLedger(StateLedger):
    """The pod's ledger: every state recorded as sent also goes to the launching ferry."""

    def __init__(self, control: ControlChannel) -> None:
        super().__init__()
        self._control = control

    def record_sent(
        self, state: AirbyteStateMessage, covers_records: int, totals: Totals | None = None
    ) -> PendingState:
        self._control.send(state_event("state", encode(state), covers_records, totals))
        return super().record_sent(state, covers_records, totals)


class PodAttempt(Attempt):
    """The attempt inside the pod: connectors on FIFOs, everything reported on the control
    stream, nothing logged or committed here."""

    def __init__(self, plan: AttemptPlan, directory: Path, control: ControlChannel) -> None:
        super().__init__(plan, {}, None, lambda states: None)
        self.directory = directory
        self.control = control
        self.ledger = ForwardingLedger(control)

    async def _start(
        self, ref: ConnectorRef, role: Role, files: dict[str, bytes]
    ) -> ConnectorProcess:
        await prepare_fifos(self.directory / role, role == "destination")
        return FifoProcess(
            self.directory / role,
            reads_stdin=role == "destination",
            log=lambda line: self._on_text_from(role, line),
            name=f"the {role}",
        )

    def _confirm(self, echoed: AirbyteStateMessage) -> list[PendingState]:
        self.control.send(stats_event(self.stats))
        self.control.send(state_event("echo", encode(echoed)))
        with contextlib.suppress(ProtocolViolation):  # the launching ferry reports it
            self.ledger.confirm(echoed)
        return []

    def _on_message(self, role: Role, message: AirbyteMessage) -> None:
        self.control.send(Event("message", role=role, message=msgspec.Raw(encode(message))))
        trace = message.trace
        if trace is not None and trace.error is not None:
            super()._on_message(role, message)  # the failure decides the final statuses

    def _on_text_from(self, role: Role, text: str) -> None:
        self.control.send(Event("text", role=role, text=text))

    def failures(self) -> list[tuple[Role, FerryError]]:
        return list(self._errors.items())

    async def report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self.control.send(stats_event(self.stats))


async def _connect(relay: str, token: str, channel: str) -> socket.socket:
    host, _, port = relay.rpartition(":")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    address = (await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM))[0][4]
    await loop.sock_connect(sock, address)
    await loop.sock_sendall(sock, handshake_line(token, channel))
    return sock


async def _commands(sock: socket.socket, attempt: PodAttempt) -> None:
    """Each stop command is one `request_stop`: the source first, then the destination. The
    launching ferry never closes this channel while the sync runs: its end means ferry is gone
    (killed: its kernel closed the socket) or withdrew the run."""
    reader = _SocketReader(sock)
    async for block in complete_lines(reader):
        for _ in range(block.count(STOP_COMMAND)):
            attempt.request_stop()
    attempt.control.lose("ferry closed the commands channel")


class _SocketReader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def read(self, n: int) -> bytes:
        try:
            return await asyncio.get_running_loop().sock_recv(self._sock, n)
        except OSError:
            return b""


@dataclass(frozen=True)
class Launcher:
    """The launching ferry as the pump reaches it: its relay port, the pod's token, and how
    often to check that it is still there."""

    host: str
    port: int
    token: str
    heartbeat: HeartbeatSettings

    @classmethod
    def from_env(cls) -> Launcher:
        host, _, port = os.environ["FERRY_PUMP_RELAY"].rpartition(":")
        defaults = HeartbeatSettings()
        interval, timeout, failures = os.environ.get(ENV_HEARTBEAT, "").split() or (
            defaults.interval,
            defaults.probe_timeout,
            defaults.max_failures,
        )
        heartbeat = HeartbeatSettings(
            interval=float(interval), probe_timeout=int(timeout), max_failures=int(failures)
        )
        return cls(host, int(port), os.environ["FERRY_PUMP_TOKEN"], heartbeat)

    @property
    def relay(self) -> str:
        return f"{self.host}:{self.port}"

    async def status(self, path: str) -> int | None:
        return await request_status(self.host, self.port, path, self.heartbeat.probe_timeout)


async def _heartbeat(launcher: Launcher, control: ControlChannel) -> None:
    """Probe ferry every interval, as the heartbeat sidecar does in other pods: a 410 (ferry
    withdrew the token) or `max_failures` failed probes in a row mean ferry is gone."""
    failures = 0
    while True:
        status = await launcher.status(heartbeat_path(launcher.token))
        if status == 410:
            control.lose("ferry answered 410 Gone (the run was stopped or ferry restarted)")
            return
        failures = 0 if status == 200 else failures + 1
        if failures >= launcher.heartbeat.max_failures:
            control.lose(
                f"ferry is unreachable at {launcher.relay}: {failures} heartbeats in a row failed"
            )
            return
        await asyncio.sleep(launcher.heartbeat.interval)


async def _watch_ferry(attempt: PodAttempt) -> None:
    """Once the launching ferry is gone, stop both connectors."""
    await attempt.control.lost.wait()
    _stop_both(attempt)


def _stop_both(attempt: PodAttempt) -> None:
    for role in ("source", "destination"):
        with contextlib.suppress(OSError):
            (attempt.directory / role / TERMINATE_FILE).write_text("the pod is stopping\n")
    attempt.request_stop()


async def run_pump(directory: Path, catalog: ConfiguredAirbyteCatalog, launcher: Launcher) -> int:
    relay, token = launcher.relay, launcher.token
    stderr_sock = await _connect(relay, token, "stderr")
    os.dup2(stderr_sock.fileno(), 2)  # this program's log and tracebacks reach ferry's log
    control = ControlChannel(await _connect(relay, token, "stdout"))
    commands_sock = await _connect(relay, token, "stdin")
    placeholder = ConnectorRef("pod", "")
    plan = AttemptPlan(placeholder, placeholder, b"", b"", catalog, RunLabels())
    attempt = PodAttempt(plan, directory, control)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, _stop_both, attempt)
    helpers = [
        asyncio.create_task(_commands(commands_sock, attempt)),
        asyncio.create_task(_watch_ferry(attempt)),
        asyncio.create_task(_heartbeat(launcher, control)),
        asyncio.create_task(attempt.report_stats()),
    ]
    try:
        outcome = await attempt.run()
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    control.send(stats_event(attempt.stats))
    for event in error_events(attempt.failures()):
        control.send(event)
    control.send(Event("end", cancelled=outcome.cancelled))
    await control.close()
    return 0


def keep_heap() -> None:
    """Keep freed chunk buffers in the heap instead of handing them back to the kernel.

    The pump moves the data on the main thread, whose glibc arena shrinks the heap (brk) as soon
    as a large chunk at its top is freed, and grows it again for the next read: about 20 brk
    calls per MB, each new page faulted and zeroed, 1.4x the CPU per MB of a local sync (whose
    pump runs in a thread arena, which does not shrink). A fixed mmap threshold of 32 MiB and
    trim threshold of 256 MiB keep them; the pump's own memory stays a few chunks. Not glibc
    (no mallopt): nothing to do."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


async def run_and_report(
    directory: Path, catalog: ConfiguredAirbyteCatalog, launcher: Launcher
) -> int:
    """`run_pump`, then its exit code written to the exit file and, unless 0, reported to ferry
    (one try: ferry may be gone). 0 means the end event was sent: ferry learns how the sync
    ended from it and removes the pod without waiting for this report."""
    code = 1
    try:
        code = await run_pump(directory, catalog, launcher)
    finally:
        (directory / f"{EXIT_FILE}.tmp").write_text(f"{code}\n")
        (directory / f"{EXIT_FILE}.tmp").rename(directory / EXIT_FILE)
        if code != 0:
            await launcher.status(exit_path(launcher.token, code))
    return code


def main() -> int:
    keep_heap()
    logging.basicConfig(level=logging.INFO, format="ferry-pump: %(message)s", stream=sys.stderr)
    # The connectors' messages and text go to the launching ferry as events, which logs them.
    connectors = logging.getLogger("ferry.connector")
    connectors.addHandler(logging.NullHandler())
    connectors.propagate = False
    directory = Path(os.environ["FERRY_PUMP_DIR"])
    # podman makes the emptyDir 0755: connectors running as other users make their FIFOs there.
    with contextlib.suppress(OSError):
        directory.chmod(0o777)
    catalog_bytes = Path(os.environ["FERRY_PUMP_CATALOG"]).read_bytes()
    catalog = msgspec.json.decode(catalog_bytes, type=ConfiguredAirbyteCatalog)
    return asyncio.run(run_and_report(directory, catalog, Launcher.from_env()))


if __name__ == "__main__":
    exit_code = main()
    logging.shutdown()
    # Everything is written and closed: skip Python's teardown (20-30 ms in the ferry image),
    # which the pod's removal would wait for.
    os._exit(exit_code)
