"""The local runtime: a connector is a plain child process of ferry.

Files (config, catalog, state) go to a private dir under $FERRY_HOME/run (0700, files 0600),
removed when the process is waited for or terminated; a SIGKILLed ferry's are swept by the next
ferry command. Stdout and stderr are pipes read straight from their file descriptors in large
chunks (no StreamReader copies); the pipes are enlarged to 1 MiB so a fast connector is not
woken up every 64 KiB.

Each connector runs under a small supervisor (supervisor.py) that leads a process group of its
own: a Ctrl-C at ferry's terminal does not reach connectors (ferry stops them), a stop signals
the whole group, and when the connector exits, or ferry dies (even by SIGKILL: the supervisor
gets PR_SET_PDEATHSIG), the supervisor kills every process the connector left, forked workers
and daemons included. (The death signal fires when the *thread* that started the child exits:
start connectors from the thread that runs the event loop for as long as they run, which asyncio
does.)

The group stays in ferry's session, so connectors share ferry's scheduling group (Linux's
autogroup, one per session): in sessions of their own, 20 syncs' connectors got 40 CPU shares
to their ferry processes' one, and ferry's state commits waited for a CPU behind them.
`FERRY_CONNECTOR_NICE` (0-19, default 0) starts connectors that much nicer than ferry, so that
on an oversubscribed machine ferry's control path (state commits, stops) gets a CPU first; it
is an option because it also lowers the connectors' priority against everything else their
scheduling group holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

from ferry.errors import ConfigError, ConnectorNotFound, FerryError, RuntimeUnavailable
from ferry.home import make_run_dir
from ferry.runtimes.base import (
    ByteReader,
    ByteWriter,
    ConnectorInvocation,
    ConnectorRef,
    LogSink,
    StderrLines,
    StderrTail,
    fingerprint_of,
    protocol_args,
)
from ferry.runtimes.local import supervisor
from ferry.runtimes.local.install import load_manifest
from ferry.runtimes.pipes import PipeReader, PipeWriter, enlarge_pipe

# Standalone (-I -S: no site, no environment): it must start fast and import nothing of ferry.
SUPERVISOR = [sys.executable, "-I", "-S", supervisor.__file__]
NICE_VARIABLE = "FERRY_CONNECTOR_NICE"


def connector_nice() -> int:
    """How much nicer than ferry local connectors run: `FERRY_CONNECTOR_NICE`, 0 to 19."""
    value = os.environ.get(NICE_VARIABLE, "").strip() or "0"
    try:
        nice = int(value)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise ConfigError(f"{NICE_VARIABLE}={value!r} is not a nice increment from 0 to 19")
    return nice


class LocalProcess:
    """A running local connector (implements ConnectorProcess)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stdout_fd: int,
        stderr_fd: int,
        stdin_fd: int | None,
        workdir: Path,
        log: LogSink,
        name: str,
    ) -> None:
        self._process = process
        self._workdir = workdir
        self._tail = StderrTail()
        self._stdout = PipeReader(stdout_fd)
        self._stdin = PipeWriter(stdin_fd) if stdin_fd is not None else None
        # Typed as the interface's attributes (a protocol's attributes are invariant).
        self.stdout: ByteReader = self._stdout
        self.stdin: ByteWriter | None = self._stdin
        self._stderr = PipeReader(stderr_fd)
        self._exit = asyncio.create_task(process.wait(), name=f"{name} exit")
        self._exit.add_done_callback(lambda _: self._on_exit())
        self._draining = asyncio.create_task(
            StderrLines(log, self._tail).drain(self._stderr), name=f"{name} stderr"
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def _on_exit(self) -> None:
        self._stdout.process_exited()
        self._stderr.process_exited()

    async def wait(self) -> int:
        try:
            code = await asyncio.shield(self._exit)
            await asyncio.shield(self._draining)
        finally:
            self._remove_files()
        return code

    async def terminate(self, grace: float = 10.0) -> None:
        try:
            if not self._exit.done():
                self._signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(self._exit), grace)
                except TimeoutError:
                    self._signal(signal.SIGKILL)
                    await asyncio.shield(self._exit)
            await asyncio.shield(self._draining)
        finally:
            self._stdout.close()
            if self._stdin is not None:
                await self._stdin.close()
            self._remove_files()

    def _signal(self, signum: int) -> None:
        """To the supervisor's group: the connector and all it forked (the supervisor itself
        outlives SIGTERM to kill what is left once the connector exits)."""
        if self._exit.done():  # reaped: its group id may belong to someone else by now
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def stderr_tail(self) -> list[str]:
        return self._tail.lines()

    def _remove_files(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


def write_private_files(files: dict[str, bytes]) -> tuple[Path, dict[str, str]]:
    """A fresh 0700 dir under $FERRY_HOME/run holding each file as NAME.json (0600); returns
    it and the paths."""
    workdir = make_run_dir("connector")
    paths: dict[str, str] = {}
    try:
        for name, data in files.items():
            path = workdir / f"{name}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths[name] = str(path)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir, paths


class LocalRuntime:
    """Runs connectors as local processes (implements Runtime)."""

    name = "local"

    async def start(self, invocation: ConnectorInvocation, log: LogSink) -> LocalProcess:
        ref = invocation.connector
        workdir, paths = write_private_files(dict(invocation.files))
        argv = [ref.target, *ref.args, *protocol_args(invocation.verb, paths)]
        try:
            return await _spawn(argv, invocation, workdir, log)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    async def fingerprint(self, ref: ConnectorRef) -> str | None:
        return executable_fingerprint(ref)

    async def sweep_orphans(self) -> list[str]:
        return []  # a local connector dies with its supervisor; nothing is left to remove

    async def close(self) -> None:
        """Nothing is held between connectors."""


def executable_fingerprint(ref: ConnectorRef) -> str | None:
    """The executable's real path, size and mtime; for a connector ferry installed, also its
    package version; for a script beside ferry's interpreter (a first-party connector, whose
    code an editable install changes without touching the script), ferry_connectors' sources.
    None when the executable cannot be read (starting it will say why)."""
    executable = Path(ref.target)
    try:
        real = executable.resolve(strict=True)
        stat = real.stat()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    identity: dict[str, object] = {
        "executable": str(real),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    installed = load_manifest(executable.parent.parent)  # <venv>/bin/<script>
    if installed is not None and installed.executable_path == executable:
        identity["package"] = f"{installed.package}=={installed.version}"
    if executable.parent == Path(sys.executable).parent:
        identity["first_party_sources"] = _first_party_sources()
    return fingerprint_of(ref, **identity)


def _first_party_sources() -> list[list[object]]:
    """Name, size and mtime of each module of ferry_connectors (found without importing it)."""
    found = importlib.util.find_spec("ferry_connectors")
    if found is None or not found.submodule_search_locations:
        return []
    package = Path(next(iter(found.submodule_search_locations)))
    sources: list[list[object]] = []
    for module in sorted(package.glob("*.py")):
        with contextlib.suppress(FileNotFoundError):  # replaced by an editor right now
            stat = module.stat()
            sources.append([module.name, stat.st_size, stat.st_mtime_ns])
    return sources


async def _spawn(
    argv: list[str], invocation: ConnectorInvocation, workdir: Path, log: LogSink
) -> LocalProcess:
    ref = invocation.connector
    env = {**os.environ, **invocation.environment}
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    stdin_read, stdin_write = os.pipe() if invocation.reads_stdin else (None, None)
    for fd in (stdout_read, stdin_write):
        if fd is not None:
            enlarge_pipe(fd)
    child_ends = [stdout_write, stderr_write] + ([stdin_read] if stdin_read is not None else [])
    parent_ends = [stdout_read, stderr_read] + ([stdin_write] if stdin_write is not None else [])
    try:
        _check_executable(argv[0])
        process = await asyncio.create_subprocess_exec(
            *SUPERVISOR,
            str(os.getpid()),
            str(connector_nice()),
            *argv,
            stdin=stdin_read if stdin_read is not None else asyncio.subprocess.DEVNULL,
            stdout=stdout_write,
            stderr=stderr_write,
            env=env,
            process_group=0,  # not a session of its own: see the module's docstring
        )
    except BaseException as error:
        for fd in parent_ends:
            os.close(fd)
        if isinstance(error, OSError):
            raise _start_error(ref.target, error) from None
        raise
    finally:
        for fd in child_ends:
            os.close(fd)
    name = Path(ref.target).name
    return LocalProcess(process, stdout_read, stderr_read, stdin_write, workdir, log, name)


def _check_executable(target: str) -> None:
    """The supervisor starts the connector: say here what would stop it from starting."""
    if shutil.which(target) is not None:
        return
    if os.path.exists(target) and "/" in target:
        raise PermissionError(target)
    raise FileNotFoundError(target)


def _start_error(target: str, error: OSError) -> FerryError:
    if isinstance(error, FileNotFoundError):
        return ConnectorNotFound(f"connector executable {target} does not exist")
    if isinstance(error, PermissionError):
        return ConnectorNotFound(f"connector {target} is not executable (try chmod +x {target})")
    return RuntimeUnavailable(f"cannot start connector {target}: {error.strerror or error}")
