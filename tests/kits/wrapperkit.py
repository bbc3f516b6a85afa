"""Helpers of the wrapper tests: shells, a busybox-only PATH, fake relays, process handling.

Everything runs for real: the wrapper under `busybox sh` (with a PATH holding only busybox
applets and socat, like the sidecar image) and under dash (with the host's PATH), real FIFOs,
fake connectors that are small sh scripts. The waits below only guard against hangs; no test
asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ferry.relay import wrapper_command

BUSYBOX = "/bin/busybox"
DASH = "/usr/bin/dash"
HANG_GUARD = 60.0  # seconds: a wait longer than this is a hang, reported as a failure


@dataclass(frozen=True)
class Shell:
    name: str
    argv: tuple[str, ...]
    path: str  # PATH for the wrapper and its connector

    def run(self, script: str) -> str:
        """How a connector entrypoint runs `script` (a file) with this shell."""
        return f"{' '.join(self.argv)} {script}"


def make_busybox_path(directory: Path) -> str:
    """A directory of busybox applet symlinks plus socat: a busybox-only userland."""
    directory.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = directory / applet
        if not link.exists():
            link.symlink_to(BUSYBOX)
    socat = shutil.which("socat")
    assert socat is not None, "socat must be installed for the relay tests"
    if not (directory / "socat").exists():
        (directory / "socat").symlink_to(socat)
    return str(directory)


def wait_for(predicate: object, what: str, guard: float = HANG_GUARD) -> None:
    """Poll `predicate()` until true; fail (never hang) after `guard` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + guard
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


async def until(predicate: object, what: str, guard: float = HANG_GUARD) -> None:
    """The asyncio twin of `wait_for`."""
    assert callable(predicate)
    deadline = time.monotonic() + guard
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def release_fifo(path: Path) -> None:
    """Open and close `path` read-write: wakes a peer blocked opening it (what the sidecars do)."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))


class FifoReader(threading.Thread):
    """A fake stdout/stderr relay: opens a FIFO of the shared directory and collects its bytes."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = bytearray()
        self.lock = threading.Lock()
        self.opened = threading.Event()
        self.start()

    def run(self) -> None:
        wait_for(self.path.exists, f"{self.path} to be created")
        with open(self.path, "rb", buffering=0) as fifo:
            self.opened.set()
            while chunk := fifo.read(65536):
                with self.lock:
                    self.data += chunk

    def text(self) -> str:
        with self.lock:
            return self.data.decode()


class FifoWriter(threading.Thread):
    """A fake stdin relay: opens the stdin FIFO, writes `data`, closes it (EOF)."""

    def __init__(self, path: Path, data: bytes) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.payload = data
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            wait_for(self.path.exists, f"{self.path} to be created")
            with open(self.path, "wb", buffering=0) as fifo:
                view = memoryview(self.payload)
                while view:
                    written = fifo.write(view)
                    assert written is not None
                    view = view[written:]
        except BrokenPipeError as exc:
            self.error = exc


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str  # what the connector wrote to the stderr FIFO
    log: str  # the wrapper's own stderr (the container log)
    exit_file: str | None


@dataclass
class WrapperRun:
    """The wrapper as a local process with fake relays on its FIFOs."""

    shell: Shell
    io_dir: Path
    args: Sequence[str]
    entrypoint: str | None = None
    airbyte_entrypoint: str | None = None
    reads_stdin: bool = False
    grace: float = 10.0
    poll: float = 0.05
    image: str = "ferry-test/fake:1"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    relays: bool = True

    def __post_init__(self) -> None:
        command = wrapper_command(
            self.args,
            image=self.image,
            reads_stdin=self.reads_stdin,
            entrypoint=self.entrypoint,
            io_dir=str(self.io_dir),
            grace=self.grace,
            poll=self.poll,
            shell=self.shell.argv,
        )
        env = {"PATH": self.shell.path, **command.env, **self.extra_env}
        if self.airbyte_entrypoint is not None:
            env["AIRBYTE_ENTRYPOINT"] = self.airbyte_entrypoint
        self.proc = subprocess.Popen(
            command.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stdout: FifoReader | None = None
        self.stderr: FifoReader | None = None
        if self.relays:
            self.stdout = FifoReader(self.io_dir / "stdout")
            self.stderr = FifoReader(self.io_dir / "stderr")

    def feed(self, data: bytes) -> FifoWriter:
        return FifoWriter(self.io_dir / "stdin", data)

    def wait_stdout(self, text: str) -> None:
        assert self.stdout is not None
        reader = self.stdout
        wait_for(lambda: text in reader.text(), f"{text!r} on the connector's stdout")

    def mark(self, reason: str = "test: ferry is gone") -> None:
        (self.io_dir / "terminate").write_text(reason + "\n")

    def finish(self) -> Finished:
        _, log = self.proc.communicate(timeout=HANG_GUARD)
        readers = [r for r in (self.stdout, self.stderr) if r is not None]
        for reader in readers:
            deadline = time.monotonic() + HANG_GUARD
            # The wrapper never opened it: do what a relay's watcher does.
            while reader.is_alive() and not reader.opened.is_set() and time.monotonic() < deadline:
                release_fifo(reader.path)
                time.sleep(0.01)
            reader.join(HANG_GUARD)
            assert not reader.is_alive(), f"{reader.path} never reached EOF"
        exit_path = self.io_dir / "exit"
        return Finished(
            returncode=self.proc.returncode,
            stdout=self.stdout.text() if self.stdout else "",
            stderr=self.stderr.text() if self.stderr else "",
            log=log.decode(),
            exit_file=exit_path.read_text() if exit_path.exists() else None,
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path
