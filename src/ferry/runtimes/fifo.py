"""A connector seen through the FIFOs of ferry's wrapper, from a process sharing its directory.

The wrapper (ferry.relay) runs a connector with stdin/stdout/stderr on FIFOs in a directory and
writes its exit code to `exit` there; the `terminate` marker makes it stop the connector. A
process that shares that directory (the pump container of a single pod, or ferry itself when a
local Docker engine's container has it bind-mounted) reads and writes the FIFOs as plain pipes:
`FifoProcess` is then a ConnectorProcess like a local one, with no relay and no TCP hop.

FIFO opens never block: the read ends are opened non-blocking at once (the wrapper's opens of
the write ends wait for a reader) and their first read waits until the writer arrived; the
write end (stdin) is opened once the wrapper holds the read end open. Closing stdin before the
wrapper opened it waits for that open too: a FIFO opened for reading waits for a writer to come,
so closing earlier would leave the connector waiting forever instead of seeing EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

from ferry.errors import ConnectorCrashed, RuntimeUnavailable
from ferry.relay import EXIT_FILE, STDERR, STDIN, STDOUT, TERMINATE_FILE, read_exit_file
from ferry.runtimes.base import ByteReader, ByteWriter, LogSink, StderrLines, StderrTail
from ferry.runtimes.pipes import PipeReader, PipeWriter, enlarge_pipe

POLL = 0.05  # seconds between looks at the exit file, and at a missing reader of stdin
# Once the connector's stderr ended (it exited), its wrapper writes the exit code within
# milliseconds: looked for this often, this many times, before POLL again.
EXIT_POLL, EXIT_POLLS = 0.005, 100
# After the connector's output ended, how long its wrapper may take to write the exit code.
EXIT_FILE_TIMEOUT = 30.0
# How long the FIFOs of a connector may take to appear when only its wrapper can make them.
FIFO_TIMEOUT = 60.0


def ensure_fifos(directory: Path, reads_stdin: bool) -> bool:
    """Make `directory` (0777) and the connector's FIFOs in it (0666) unless they exist; True
    once they all do. The wrapper makes them too, whichever side comes first; the modes let a
    connector running as another user open them. What this user may not make (the shared
    directory not yet writable for it) is left to the wrapper."""
    old_umask = os.umask(0)
    try:
        with contextlib.suppress(OSError):
            directory.mkdir(mode=0o777, parents=True, exist_ok=True)
        for channel in [STDOUT, STDERR] + ([STDIN] if reads_stdin else []):
            with contextlib.suppress(FileExistsError, PermissionError, FileNotFoundError):
                os.mkfifo(directory / channel, 0o666)
    finally:
        os.umask(old_umask)
    channels = [STDOUT, STDERR] + ([STDIN] if reads_stdin else [])
    return all(stat.S_ISFIFO(_mode(directory / channel)) for channel in channels)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


async def prepare_fifos(directory: Path, reads_stdin: bool) -> None:
    """`ensure_fifos`, waiting (FIFO_TIMEOUT at most) for those only the wrapper may make."""
    try:
        async with asyncio.timeout(FIFO_TIMEOUT):
            while not ensure_fifos(directory, reads_stdin):  # noqa: ASYNC110 - files
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise RuntimeUnavailable(
            f"the FIFOs in {directory} were not there within {FIFO_TIMEOUT:g}s and this "
            "process cannot make them: is the shared directory writable by its user?"
        ) from None


class FifoReader(PipeReader):
    """A FIFO's read end; until its writer first opened it, reads wait instead of seeing EOF."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        enlarge_pipe(fd)  # 1 MiB instead of 64 KiB: the writer keeps going while ferry routes
        super().__init__(fd)
        self._writer_seen = False

    async def read(self, n: int) -> bytes:
        if not self._writer_seen:
            # epoll reports a FIFO readable once a writer wrote or came and went, never before.
            while not self._exited and self._fd >= 0 and not _readable(self._fd):
                await self._wait_readable()
            self._writer_seen = True
        return await super().read(n)


def _readable(fd: int) -> bool:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(0))


class LazyFifoWriter:
    """A FIFO's write end, opened at the first write (once the wrapper holds the read end)."""

    def __init__(self, path: Path, process: FifoProcess) -> None:
        self._path = path
        self._process = process
        self._writer: PipeWriter | None = None
        self._closed = False

    async def _open(self) -> PipeWriter:
        while self._writer is None:
            if self._closed or self._process.exited:
                raise BrokenPipeError(f"{self._process.name}: its stdin is closed")
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                await asyncio.sleep(POLL)
                continue
            enlarge_pipe(fd)
            self._writer = PipeWriter(fd)
        return self._writer

    async def write(self, data: bytes) -> None:
        await (await self._open()).write(data)

    async def close(self) -> None:
        """EOF for the connector: never written, the FIFO is opened first, once the connector
        holds its read end (or has exited)."""
        if self._closed:
            return
        if self._writer is None:
            with contextlib.suppress(BrokenPipeError):
                await self._open()
        await self.release()

    async def release(self) -> None:
        """Close without waiting for the connector (it is gone or no longer wanted)."""
        self._closed = True
        if self._writer is not None:
            await self._writer.close()


class FifoProcess:
    """A wrapper-run connector whose directory this process shares (implements ConnectorProcess)."""

    def __init__(self, directory: Path, *, reads_stdin: bool, log: LogSink, name: str) -> None:
        self.directory = directory
        self.name = name
        self._tail = StderrTail()
        self._stdout = FifoReader(directory / STDOUT)
        self._stderr = FifoReader(directory / STDERR)
        self.stdout: ByteReader = self._stdout
        self._stdin = LazyFifoWriter(directory / STDIN, self) if reads_stdin else None
        self.stdin: ByteWriter | None = self._stdin
        self.exited = False
        self._draining = asyncio.create_task(
            StderrLines(log, self._tail).drain(self._stderr), name=f"{name} stderr"
        )
        self._exit = asyncio.create_task(self._watch_exit(), name=f"{name} exit")

    async def _watch_exit(self) -> int:
        path = self.directory / EXIT_FILE
        quick = EXIT_POLLS
        while (code := read_exit_file(path)) is None:  # a file, not an event
            if self._draining.done() and quick > 0:
                quick -= 1
                await asyncio.sleep(EXIT_POLL)
            else:
                await asyncio.sleep(POLL)
        self.exited = True
        self._stdout.process_exited()
        self._stderr.process_exited()
        return code

    async def wait(self) -> int:
        await asyncio.shield(self._draining)
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit), EXIT_FILE_TIMEOUT)
        except TimeoutError:
            raise ConnectorCrashed(
                f"{self.name}: its output ended but its wrapper wrote no exit code within "
                f"{EXIT_FILE_TIMEOUT:g}s (its container was killed?)",
                stderr_tail="\n".join(self._tail.lines()),
            ) from None

    async def terminate(self, grace: float = 10.0) -> None:
        """Write the termination marker; the wrapper TERMs the connector, KILLs it after its own
        grace period and writes the exit code, which is awaited a little longer than `grace`."""
        if not self._exit.done():
            with contextlib.suppress(OSError):
                (self.directory / TERMINATE_FILE).write_text("ferry stopped the connector\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit), grace + 5)
        await self.close()

    async def close(self) -> None:
        """Stop watching and release the FIFOs (the connector is gone or no longer wanted)."""
        if not self._exit.done():
            self._exit.cancel()
        self._stdout.process_exited()
        self._stderr.process_exited()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._draining), 5)
        self._stdout.close()
        if self._stdin is not None:
            await self._stdin.release()

    def stderr_tail(self) -> list[str]:
        return self._tail.lines()
