"""Docker's short path: a connector on a local engine, its stdio on FIFOs ferry reads as pipes.

When the Docker engine runs on this host (a unix socket, not `tcp://` or TLS), a plain docker
connector (no `relay: true`) runs under ferry's wrapper with its stdin/stdout/stderr on FIFOs in
a private host directory bind-mounted at /ferry/io; ferry opens the other ends itself
(`fifo.FifoProcess`), so the bytes never go through the engine's attach stream (dockerd copies
every byte and multiplexes stdout with stderr there: ~125 MB/s against ~350 MB/s for a pipe).

The container is otherwise the plain one (labels, AutoRemove, the engine's init, the `none` log
driver, config files uploaded with put_archive, resources, volumes, network), and it runs the
same program: an explicit `entrypoint:`, else the image's ENTRYPOINT, else its
AIRBYTE_ENTRYPOINT (as `docker run` would), which needs /bin/sh in the image for the wrapper.
The exit code is the wrapper's (`exit` in the directory), else the engine's. `terminate()` is
`docker stop` (the wrapper traps TERM and stops the connector). The directory (0700, the FIFOs
0666 in a 0777 subdirectory for connectors running as another user) is removed with the
container. FERRY_DOCKER_FIFO=0 keeps the attach stream even on a local engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ferry.errors import FerryError, RuntimeUnavailable
from ferry.relay import (
    IO_DIR,
    TERMINATED_EXIT_CODE,
    entrypoint_from_argv,
    wrapper_command,
)
from ferry.runtimes.base import ByteReader, ByteWriter, ConnectorInvocation, LogSink, protocol_args
from ferry.runtimes.docker.containers import FILES_DIR, container_spec, resolve_entrypoint
from ferry.runtimes.docker.engine import DockerEngine
from ferry.runtimes.fifo import FifoProcess, ensure_fifos

ENV_DOCKER_FIFO = "FERRY_DOCKER_FIFO"
SIGKILL_EXIT = 137  # 128 + SIGKILL
# How often the wrapper looks for the termination marker: `docker stop -t 1` must reach the
# connector as a TERM within its grace, as it does without the wrapper.
WRAPPER_POLL = 0.2


def fifo_path_enabled(unix_path: str | None) -> bool:
    """The engine is on this host (its socket is a local file) and the path is not turned off."""
    return unix_path is not None and os.environ.get(ENV_DOCKER_FIFO, "1") != "0"


def oom_note(code: int, memory_limit: str | None) -> str | None:
    """What to tell about a SIGKILL nobody sent under a memory limit: the engine's answer does
    not say OOM, and an auto-removed container can no longer be inspected."""
    if code != SIGKILL_EXIT or not memory_limit:
        return None
    return (
        f"ferry: the container was killed (exit code {code}) under its memory limit of "
        f"{memory_limit}: most likely out of memory; raise `resources: {{memory: ...}}`"
    )


def make_fifos(reads_stdin: bool) -> Path:
    """A private directory holding `io/` (0777) with the connector's FIFOs (0666)."""
    root = Path(tempfile.mkdtemp(prefix="ferry-docker-"))
    if not ensure_fifos(root / "io", reads_stdin):
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeUnavailable(f"cannot make the connector's FIFOs in {root}")
    return root


class DockerFifoProcess:
    """A local-engine container whose stdio ferry reads from FIFOs (implements ConnectorProcess)."""

    def __init__(
        self,
        engine: DockerEngine,
        container_id: str,
        fifos: FifoProcess,
        exit_task: asyncio.Task[int],
        root: Path,
        memory_limit: str | None = None,
    ) -> None:
        self.stdout: ByteReader = fifos.stdout
        self.stdin: ByteWriter | None = fifos.stdin
        self._engine = engine
        self.container_id = container_id
        self._fifos = fifos
        self._exit = exit_task
        self._root = root
        self._memory_limit = memory_limit
        self._terminating = False
        self._notes: list[str] = []
        self._code: int | None = None

    async def wait(self) -> int:
        """The wrapper's exit code once stderr is drained, else the engine's (a killed wrapper)."""
        if self._code is None:
            try:
                self._code = await self._exit_code()
            finally:
                self._release()
            note = None if self._terminating else oom_note(self._code, self._memory_limit)
            if note:
                self._notes.append(note)
        return self._code

    async def _exit_code(self) -> int:
        code = await asyncio.shield(self._exit)
        done, _ = await asyncio.wait({asyncio.ensure_future(self._fifos.wait())}, timeout=5)
        for task in done:
            with contextlib.suppress(FerryError):
                code = task.result()
        return code

    async def terminate(self, grace: float = 10.0) -> None:
        self._terminating = True
        try:
            if not self._exit.done():
                try:
                    await self._engine.stop(self.container_id, grace)
                    await asyncio.wait_for(asyncio.shield(self._exit), 30)
                except (TimeoutError, FerryError):
                    with contextlib.suppress(FerryError):
                        await self._engine.remove(self.container_id)
            if self._code is None and self._exit.done() and not self._exit.cancelled():
                with contextlib.suppress(FerryError):
                    self._code = await self._exit_code()
            await self._fifos.close()
        finally:
            self._release()
        if self._code is None:
            self._code = TERMINATED_EXIT_CODE

    def stderr_tail(self) -> list[str]:
        return self._fifos.stderr_tail() + self._notes

    def _release(self) -> None:
        if not self._exit.done():
            self._exit.cancel()
        shutil.rmtree(self._root, ignore_errors=True)


async def start_with_fifos(
    engine: DockerEngine, invocation: ConnectorInvocation, log: LogSink
) -> DockerFifoProcess:
    api = await engine.api()
    endpoint = await engine.endpoint()
    ref = invocation.connector
    config = await engine.image_config(ref.target, ref.options.pull)
    chosen = resolve_entrypoint(ref.target, config, ref.options)
    argv = chosen if chosen is not None else [str(a) for a in config.get("Entrypoint") or []]
    paths = {name: f"{FILES_DIR}/{name}.json" for name in invocation.files}
    spec = container_spec(invocation, None, paths)
    wrapper = wrapper_command(
        [*ref.args, *protocol_args(invocation.verb, paths)],
        image=ref.target,
        reads_stdin=invocation.reads_stdin,
        entrypoint=entrypoint_from_argv(argv) if argv else None,
        poll=WRAPPER_POLL,
    )
    root = make_fifos(invocation.reads_stdin)
    host_config = dict(spec.host_config)
    host_config["binds"] = {
        **host_config.get("binds", {}),
        str(root / "io"): {"bind": IO_DIR, "mode": "rw"},
    }
    container_id = ""
    try:
        created = await engine.call(
            f"create a container from {ref.target}",
            api.create_container,
            spec.image,
            entrypoint=list(wrapper.argv),
            environment={**spec.environment, **wrapper.env},
            labels=spec.labels,
            name=spec.name,
            host_config=api.create_host_config(**host_config),
        )
        container_id = str(created["Id"])
        if invocation.files:
            await engine.upload_files(container_id, invocation.files, config)
        fifos = FifoProcess(
            root / "io", reads_stdin=invocation.reads_stdin, log=log, name=spec.name
        )
        exit_task = await endpoint.start_wait(container_id, "removed")
        try:
            await engine.call(f"start the container of {ref.target}", api.start, container_id)
        except BaseException:
            exit_task.cancel()
            await fifos.close()
            raise
    except BaseException:
        with contextlib.suppress(FerryError):
            await asyncio.shield(engine.remove(container_id or spec.name))
        shutil.rmtree(root, ignore_errors=True)
        raise
    return DockerFifoProcess(
        engine, container_id, fifos, exit_task, root, memory_limit=ref.options.memory
    )
