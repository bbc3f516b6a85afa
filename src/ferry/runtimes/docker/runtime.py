"""The Docker runtime: the image's own entrypoint, through the Docker Engine API.

One container per connector invocation, created from the SDK (`docker.from_env()`, so
DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH select the engine, remote ones included):

1. The image is checked (and pulled per the `pull` policy: never / if-not-present / always).
2. The container is created with the protocol arguments as its command (for the image's own
   ENTRYPOINT; else its AIRBYTE_ENTRYPOINT, or the `entrypoint:` option), the `ferry.*` labels,
   `AutoRemove`, the engine's init as PID 1 (so SIGTERM reaches the connector) and the `none`
   log driver (records never land in the engine's json log files).
3. Config, catalog and state are uploaded into the created container with `put_archive` — a
   tar built in memory, `/ferry/*.json` mode 0600 owned by the image's user — so nothing is
   bind-mounted from ferry's host and a remote engine works. Secrets are never in labels, env,
   the command line, an image layer or a log; containers are never committed.
4. stdout+stderr are attached (and stdin, for `write`) BEFORE start, and a wait for the
   container's removal is registered, so no output and no exit is missed.
5. The container starts; when it exits the engine removes it; `wait()` returns its exit code
   once stdout/stderr are drained, and writes to its stdin fail with BrokenPipeError (the
   engine itself would leave them hanging). `terminate()` is `docker stop -t grace` (TERM,
   then KILL); the container is gone when it returns.

Streams go over raw asyncio connections hijacked from `POST /containers/{id}/attach` (HTTP
upgrade; one stdout+stderr connection, one stdin connection whose close is the EOF), read with a
BufferedProtocol into one reused 1 MiB buffer and demultiplexed with memoryview slices: no
thread per stream, reads that are cancellable, backpressure by pausing the socket, the same code
on unix, tcp and tcp+TLS. The `none` log driver matters more than the way the streams are read
(benchmarks/README.md, "Design measurements").

A container costs 300-600 ms from create to removal depending on load (create ~25 ms,
put_archive ~90 ms: the engine mounts the container's filesystem, the attaches and the wait
< 1 ms each, start ~280 ms, exit to auto-removal ~125 ms), the same as `docker run --rm`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ferry.errors import FerryError
from ferry.runtimes.base import (
    ByteReader,
    ByteWriter,
    ConnectorInvocation,
    ConnectorRef,
    LogSink,
    StderrLines,
    StderrTail,
    fingerprint_of,
)
from ferry.runtimes.docker.attach import OutputStream
from ferry.runtimes.docker.containers import FILES_DIR, container_spec, resolve_entrypoint
from ferry.runtimes.docker.endpoint import StdinStream
from ferry.runtimes.docker.engine import DockerEngine
from ferry.runtimes.docker.fifo import (
    DockerFifoProcess,
    fifo_path_enabled,
    oom_note,
    start_with_fifos,
)
from ferry.runtimes.docker.gc import collect_docker
from ferry.runtimes.docker.relay import start_relayed
from ferry.runtimes.relayed import PodProcess

# How long terminate() waits for the engine to remove a stopped container before forcing it.
REMOVE_TIMEOUT = 30.0

logger = logging.getLogger(__name__)


class DockerProcess:
    """A running connector container (implements ConnectorProcess)."""

    def __init__(
        self,
        engine: DockerEngine,
        container_id: str,
        name: str,
        stdout: OutputStream,
        stdin: StdinStream | None,
        attach_finished: asyncio.Future[None],
        closers: list[Callable[[], None]],
        exit_task: asyncio.Task[int],
        tail: StderrTail,
        memory_limit: str | None = None,
    ) -> None:
        self.container_id = container_id
        self.name = name
        self.stdout: ByteReader = stdout
        self.stdin: ByteWriter | None = stdin
        self._stdout = stdout
        self._engine = engine
        self._attach_finished = attach_finished
        self._closers = closers
        self._exit = exit_task
        self._tail = tail
        self._memory_limit = memory_limit
        self._terminating = False
        self._released = False

    async def wait(self) -> int:
        """The exit code, once the container is gone and stdout/stderr were routed."""
        try:
            code = await asyncio.shield(self._exit)
            await asyncio.shield(self._attach_finished)
        except FerryError:
            self._release()
            raise
        self._release()
        note = None if self._terminating else oom_note(code, self._memory_limit)
        if note:
            self._tail.add(note)
        return code

    async def terminate(self, grace: float = 10.0) -> None:
        """`docker stop -t grace` (TERM, then KILL), then make sure the container is gone."""
        # Nobody reads stdout any more: keep draining (and dropping) it, or the engine blocks
        # writing to the paused attach stream and cannot stop the container.
        self._stdout.discard()
        self._terminating = True
        try:
            if not self._exit.done():
                try:
                    await self._engine.stop(self.container_id, grace)
                    await asyncio.wait_for(asyncio.shield(self._exit), REMOVE_TIMEOUT)
                except (TimeoutError, FerryError):
                    await self._force_remove()
        finally:
            if self.stdin is not None:
                await self.stdin.close()
            self._release()

    async def _force_remove(self) -> None:
        try:
            await self._engine.remove(self.container_id)
        except FerryError as e:  # terminate() runs during error handling: never mask that error
            logger.warning("could not remove container %s: %s", self.name, e)

    def stderr_tail(self) -> list[str]:
        return self._tail.lines()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        for close in self._closers:
            close()
        if self._exit.done() and not self._exit.cancelled():
            self._exit.exception()  # retrieved: a failed wait is reported by wait() only


class DockerRuntime:
    """Runs connectors as Docker containers (implements Runtime)."""

    name = "docker"

    def __init__(self) -> None:
        self.engine = DockerEngine()

    async def start(
        self, invocation: ConnectorInvocation, log: LogSink
    ) -> DockerProcess | DockerFifoProcess | PodProcess:
        if invocation.connector.options.relay:  # relay mode: wrapper + sidecars
            return await start_relayed(self.engine, invocation, log)
        engine = self.engine
        api = await engine.api()
        endpoint = await engine.endpoint()
        if fifo_path_enabled(endpoint.unix_path):  # a local engine: FIFOs, not the attach stream
            return await start_with_fifos(engine, invocation, log)
        ref = invocation.connector
        image = ref.target
        config = await engine.image_config(image, ref.options.pull)
        entrypoint = resolve_entrypoint(image, config, ref.options)
        paths = {name: f"{FILES_DIR}/{name}.json" for name in invocation.files}
        spec = container_spec(invocation, entrypoint, paths)
        try:
            created = await engine.call(
                f"create a container from {image}",
                api.create_container,
                spec.image,
                command=spec.command,
                entrypoint=spec.entrypoint,
                environment=spec.environment or None,
                labels=spec.labels,
                name=spec.name,
                stdin_open=spec.stdin,
                host_config=api.create_host_config(**spec.host_config),
            )
        except BaseException:
            # Cancelled mid-call, the container may exist without ferry knowing its id.
            await self._remove_quietly(spec.name)
            raise
        container_id = str(created["Id"])
        closers: list[Callable[[], None]] = []
        try:
            if invocation.files:
                await engine.upload_files(container_id, invocation.files, config)
            tail = StderrTail()
            stdout = OutputStream()
            attach = await endpoint.open_attach(container_id, stdout, StderrLines(log, tail))
            closers.append(attach.close)
            stdin = await endpoint.open_stdin(container_id) if spec.stdin else None
            if stdin is not None:
                closers.append(stdin.abort)
            exit_task = await endpoint.start_wait(container_id, "removed")
            closers.append(lambda: _cancel(exit_task))
            if stdin is not None:
                # The engine keeps a dead container's stdin connection open (writes would just
                # block): once the container is gone, drop it so writes fail like a broken pipe.
                exit_task.add_done_callback(_abort_stdin(stdin))
            await engine.call(f"start the container of {image}", api.start, container_id)
        except BaseException:
            for close in closers:
                close()
            await self._remove_quietly(container_id)
            raise
        return DockerProcess(
            engine,
            container_id,
            spec.name,
            stdout,
            stdin,
            attach.finished,
            closers,
            exit_task,
            tail,
            memory_limit=ref.options.memory,
        )

    async def fingerprint(self, ref: ConnectorRef) -> str | None:
        """The image's content id after the pull policy is applied (as `start` applies it), and
        the options that choose which program in the image runs."""
        await self.engine.image_config(ref.target, ref.options.pull)
        info = await self.engine.inspect_image(ref.target)
        image_id = info.get("Id") if info is not None else None
        if not image_id:
            return None
        options = ref.options
        return fingerprint_of(
            ref, image_id=str(image_id), relay=options.relay, entrypoint=options.entrypoint
        )

    async def _remove_quietly(self, container: str) -> None:
        """Clean up after a failed start without hiding why it failed."""
        try:
            await asyncio.shield(self.engine.remove(container))
        except FerryError as e:
            logger.warning("could not remove container %s: %s", container, e)

    async def sweep_orphans(self) -> list[str]:
        """The containers of killed ferry processes, removed (what `ferry gc` does for Docker)."""
        return await asyncio.to_thread(collect_docker, False)

    async def close(self) -> None:
        await self.engine.close()


def _cancel(task: asyncio.Task[int]) -> None:
    task.cancel()


def _abort_stdin(stdin: StdinStream) -> Callable[[asyncio.Task[int]], None]:
    def abort(_: asyncio.Task[int]) -> None:
        stdin.abort()

    return abort
