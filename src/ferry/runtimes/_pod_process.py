"""The ConnectorProcess of a connector running in a pod (Podman or Kubernetes).

Bytes flow over ferry's relay listener (`RelayRegistration`: stdout, stdin, stderr lines); the
pod's life comes from a `PodBackend` (podman CLI or the Kubernetes API), which reports the
connector container's exit code or raises why the pod failed (image pull, OOMKilled, eviction,
deadline, deletion). A failure aborts every relay channel with that error, so no read or write
hangs on a pod that is gone; `wait()` prefers the container's exit code and falls back to the
code the heartbeat sidecar reported. The pod, its Secret and its relay token are released on
`wait()`, on `terminate()` and when starting fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from ferry.errors import ConnectorCrashed, FerryError
from ferry.runtimes.base import ByteReader, ByteWriter, LogSink, StderrTail
from ferry.wrapper import RelayListener, RelayRegistration

logger = logging.getLogger("ferry.runtimes.pod")

# Once the pod runs, every relay must connect within this many seconds.
CONNECT_TIMEOUT = 60.0
# After the connector's output ended, how long to wait for its container's exit code.
EXIT_TIMEOUT = 60.0
# After a relay broke, how long to wait for the pod's own explanation (OOMKilled, evicted...).
EXPLAIN_TIMEOUT = 15.0


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
        self.stdout: ByteReader = registration.stdout
        self.stdin: ByteWriter | None = registration.stdin
        self._listener = listener
        self._registration = registration
        self._tail = tail
        self._connect_timeout = connect_timeout
        self._exit_timeout = exit_timeout
        self._released = False
        self._release_lock = asyncio.Lock()
        self._exit: asyncio.Task[int] = asyncio.create_task(self._watch())

    async def _watch(self) -> int:
        try:
            return await self.backend.wait_connector(self._running)
        except FerryError as error:
            self._registration.abort(error)
            raise

    def _running(self) -> None:
        self._registration.set_connect_timeout(self._connect_timeout)

    async def wait(self) -> int:
        """The connector's exit code once its output and stderr were fully relayed."""
        try:
            try:
                await self._registration.wait_stderr()
            except FerryError as relay_error:
                raise await self._explain(relay_error) from None
            return await self._exit_code()
        finally:
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
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit), self._exit_timeout)
        except TimeoutError:
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
            ) from None

    async def terminate(self, grace: float = 10.0) -> None:
        """Stop the pod if it still runs (TERM, KILL after `grace`), then delete it."""
        if self._released:
            return
        try:
            if not self._exit.done():
                self._listener.unregister(self._registration.token)  # heartbeat: 410 -> stop
                await self.backend.stop(grace)
        finally:
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
