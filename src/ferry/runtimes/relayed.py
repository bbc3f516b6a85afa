"""The ConnectorProcess of a relayed connector: a pod (Podman, Kubernetes, Docker relay mode).

Bytes flow over ferry's relay listener (`RelayRegistration`: stdout, stdin, stderr lines); the
pod's life comes from a `PodBackend` (podman CLI, the Kubernetes API or Docker's containers), which reports the
connector container's exit code or raises why the pod failed (image pull, OOMKilled, eviction,
deadline, deletion). A failure aborts every relay channel with that error, so no read or write
hangs on a pod that is gone; `wait()` prefers the container's exit code and falls back to the
code the heartbeat sidecar reported. The pod, its Secret and its relay token are released on
`wait()`, on `terminate()` and when starting fails.

Once `terminate()` stopped a run, the process behaves like a stopped local process or plain
Docker container, as the sync engine expects of every runtime (a cancelled sync must end as
cancelled, not crashed): stdout ends (b""), stdin writes raise BrokenPipeError, and `wait()`
returns the connector's exit status (TERMINATED_EXIT_CODE when none was learned) instead of
failing because the relay registration was withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from ferry.errors import ConnectorCrashed, FerryError
from ferry.relay import TERMINATED_EXIT_CODE, RelayListener, RelayRegistration
from ferry.runtimes.base import ByteReader, ByteWriter, ConnectorInvocation, LogSink, StderrTail

logger = logging.getLogger(__name__)

# Once the pod runs, every relay must connect within this many seconds.
CONNECT_TIMEOUT = 60.0
# After the connector's output ended, how long to wait for its container's exit code.
EXIT_TIMEOUT = 60.0
# After a relay broke, how long to wait for the pod's own explanation (OOMKilled, evicted...).
EXPLAIN_TIMEOUT = 15.0
# After `terminate()` stopped the pod, how long to wait for its connector's exit status.
STOPPED_EXIT_TIMEOUT = 5.0


class PodBackend(Protocol):
    """What a pod runtime provides for one pod."""

    description: str  # e.g. "pod ferry-x-src-read-1a2b3c4d in namespace etl"

    async def wait_connector(self, on_running: Callable[[], None]) -> int:
        """The connector container's exit code once it terminated.

        Calls `on_running` once the pod's containers run. Raises a FerryError saying why when
        the pod fails first (image pull, OOMKilled, evicted, deadline, deleted by someone else).
        """
        ...

    async def stop(self, grace: float) -> None:
        """Stop the pod's containers: TERM, then KILL after `grace` seconds."""
        ...

    async def remove(self) -> None:
        """Delete the pod, its Secret and volumes. Idempotent; logs instead of raising."""
        ...


def stderr_sink(log: LogSink, tail: StderrTail) -> Callable[[str], None]:
    def sink(line: str) -> None:
        tail.add(line)
        log(line)

    return sink


class _StdoutEndsWhenStopped:
    """The stdout relay; it ends (b"") once ferry stopped the run, rather than failing because
    the run's token was withdrawn."""

    def __init__(self, process: PodProcess, inner: ByteReader) -> None:
        self._process = process
        self._inner = inner

    async def read(self, n: int) -> bytes:
        if self._process.stopping:
            return b""
        try:
            return await self._inner.read(n)
        except FerryError:
            if self._process.stopping:
                return b""
            raise


class _StdinClosedWhenStopped:
    """The stdin relay; once ferry stopped the run, writes fail like a closed pipe."""

    def __init__(self, process: PodProcess, inner: ByteWriter) -> None:
        self._process = process
        self._inner = inner

    async def write(self, data: bytes) -> None:
        if self._process.stopping:
            raise BrokenPipeError("the connector's stdin is closed (the run was stopped)")
        try:
            await self._inner.write(data)
        except FerryError:
            if self._process.stopping:
                raise BrokenPipeError(
                    "the connector's stdin is closed (the run was stopped)"
                ) from None
            raise

    async def close(self) -> None:
        await self._inner.close()


class PodProcess:
    """A connector in a pod (implements ConnectorProcess)."""

    def __init__(
        self,
        backend: PodBackend,
        listener: RelayListener,
        registration: RelayRegistration,
        tail: StderrTail,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        exit_timeout: float = EXIT_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.stdout: ByteReader = _StdoutEndsWhenStopped(self, registration.stdout)
        self.stdin: ByteWriter | None = None
        if registration.stdin is not None:
            self.stdin = _StdinClosedWhenStopped(self, registration.stdin)
        self._listener = listener
        self._registration = registration
        self._tail = tail
        self._connect_timeout = connect_timeout
        self._exit_timeout = exit_timeout
        self._stopping = False  # terminate() stopped the run before wait() had its outcome
        self._finished = False  # wait() had its outcome (exit code or failure)
        self._released = False
        self._release_lock = asyncio.Lock()
        self._terminate_lock = asyncio.Lock()
        self._exit: asyncio.Task[int] = asyncio.create_task(self._watch())

    @property
    def stopping(self) -> bool:
        """True once `terminate()` stopped the run (its outcome is no longer a failure)."""
        return self._stopping

    async def _watch(self) -> int:
        try:
            return await self.backend.wait_connector(self._running)
        except FerryError as error:
            self._registration.abort(error)
            raise

    def _running(self) -> None:
        self._registration.set_connect_timeout(self._connect_timeout)

    async def wait(self) -> int:
        """The connector's exit code once its output and stderr were fully relayed.

        After `terminate()`: the exit status it learned (TERMINATED_EXIT_CODE if none), never
        the failure of the channels the stop broke.
        """
        if not self._stopping:
            try:
                code = await self._wait_exit()
            except FerryError:
                if not self._stopping:
                    self._finished = True
                    raise
            else:
                self._finished = True
                return code
        await self.terminate()  # waits for a terminate() under way; else releases now
        return self._stopped_exit_code()

    async def _wait_exit(self) -> int:
        try:
            try:
                await self._registration.wait_stderr()
            except FerryError as relay_error:
                if self._stopping:
                    raise
                raise await self._explain(relay_error) from None
            return await self._exit_code()
        finally:
            if not self._stopping:  # else terminate() releases, once the pod is stopped
                await self._release()

    async def _explain(self, relay_error: FerryError) -> FerryError:
        """The pod's own reason for a broken relay, if it gives one soon, else the relay's."""
        with contextlib.suppress(TimeoutError, FerryError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._exit), EXPLAIN_TIMEOUT)
        if self._exit.done() and not self._exit.cancelled():
            error = self._exit.exception()
            if isinstance(error, FerryError):
                return error
        return relay_error

    async def _exit_code(self) -> int:
        await asyncio.wait({self._exit}, timeout=self._exit_timeout)
        if self._exit.cancelled():  # terminate() released the pod meanwhile
            raise ConnectorCrashed(f"{self.backend.description}: the run was stopped")
        if self._exit.done():
            return self._exit.result()
        code = self._registration.exit_code
        if code is not None:
            logger.warning(
                "%s: no container status within %gs; using the exit code %d the heartbeat "
                "sidecar reported",
                self.backend.description,
                self._exit_timeout,
                code,
            )
            return code
        raise ConnectorCrashed(
            f"{self.backend.description}: the connector's output ended but neither the "
            f"container runtime nor the heartbeat reported its exit code within "
            f"{self._exit_timeout:g}s",
            stderr_tail="\n".join(self._tail.lines()),
        )

    def _stopped_exit_code(self) -> int:
        """The exit status of a stopped run: the container runtime's, else the heartbeat's."""
        watch = self._exit
        if watch.done() and not watch.cancelled() and watch.exception() is None:
            return watch.result()
        code = self._registration.exit_code
        return TERMINATED_EXIT_CODE if code is None else code

    async def terminate(self, grace: float = 10.0) -> None:
        """Stop the pod if it still runs (TERM, KILL after `grace`), then delete it."""
        if not self._finished:
            self._stopping = True
        async with self._terminate_lock:
            if self._released:
                return
            try:
                if not self._exit.done():
                    self._listener.unregister(self._registration.token)  # heartbeat: 410 -> stop
                    await self.backend.stop(grace)
                    # learn the exit status before the pod (and the watch on it) goes
                    await asyncio.wait({self._exit}, timeout=STOPPED_EXIT_TIMEOUT)
            finally:
                await self._release()

    async def discard(self) -> None:
        """Remove the pod now, without waiting for its containers' exit status: for a caller
        that learnt how the run ended another way (a single pod's control stream)."""
        self._stopping = True
        async with self._terminate_lock:
            await self._release()

    def stderr_tail(self) -> list[str]:
        return self._tail.lines()

    async def _release(self) -> None:
        async with self._release_lock:
            if self._released:
                return
            self._released = True
            if not self._exit.done():
                self._exit.cancel()
            await asyncio.gather(self._exit, return_exceptions=True)
            self._listener.unregister(self._registration.token)
            await asyncio.shield(self.backend.remove())


class LaunchablePod(PodBackend, Protocol):
    """A pod that is made, but not yet running, for `start_pod`."""

    async def launch(self) -> None:
        """Create and start what the pod is made of. Cleanup on failure is the caller's."""
        ...


async def start_pod(
    invocation: ConnectorInvocation,
    log: LogSink,
    listener: RelayListener,
    make_pod: Callable[[RelayRegistration], LaunchablePod],
) -> PodProcess:
    """Register the connector on the relay listener, make its pod with that registration and
    launch it: the one way every relayed runtime starts a connector. Whatever fails on the way,
    the token is withdrawn and the pod removed."""
    tail = StderrTail()
    registration = listener.register(
        f"{invocation.labels.role} {invocation.connector.target}",
        reads_stdin=invocation.reads_stdin,
        log=stderr_sink(log, tail),
        connect_timeout=None,  # set once the pod runs (pulls and scheduling take their time)
    )
    try:
        pod = make_pod(registration)
    except BaseException:
        listener.unregister(registration.token)
        raise
    try:
        await pod.launch()
    except BaseException:
        listener.unregister(registration.token)
        with contextlib.suppress(Exception):
            await asyncio.shield(pod.remove())
        raise
    return PodProcess(pod, listener, registration, tail)
