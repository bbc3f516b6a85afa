"""The one interface every runtime implements: start a ConnectorInvocation, get a ConnectorProcess.

The engine talks only to these types. A runtime decides where files live (a private temp dir, a
container path, a Secret volume) and builds the protocol arguments with `protocol_args`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ferry.runtimes.options import ConnectorOptions as ConnectorOptions  # part of this interface

Verb = Literal["spec", "check", "discover", "read", "write"]
Role = Literal["source", "destination", "connector"]
RUNTIME_NAMES = ("local", "docker", "podman", "kubernetes")

# The order in which files become arguments: `read --config C --catalog K --state S`.
FILE_ORDER = ("config", "catalog", "state")

# One id per ferry process; every container/pod it starts carries it as the `ferry.owner` label
# so `ferry gc` can tell whether the owner is still alive.
OWNER_ID = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

LogSink = Callable[[str], None]


@dataclass(frozen=True)
class ConnectorRef:
    """A resolved connector reference: which runtime runs it and what it runs.

    For `local`, `target` is an executable path (argv[0]) and `args` any fixed leading arguments;
    for container runtimes `target` is an image reference.
    """

    runtime: str
    target: str
    args: tuple[str, ...] = ()
    options: ConnectorOptions = field(default_factory=ConnectorOptions)

    @property
    def display(self) -> str:
        return self.target if self.runtime == "local" else f"{self.runtime}:{self.target}"


@dataclass(frozen=True)
class RunLabels:
    """Identify what a container/pod belongs to; become `ferry.*` labels."""

    run_id: str = "adhoc"
    connection: str = "adhoc"
    role: Role = "connector"

    def as_labels(self) -> dict[str, str]:
        return {
            "ferry.run": self.run_id,
            "ferry.connection": self.connection,
            "ferry.role": self.role,
            "ferry.owner": OWNER_ID,
        }


@dataclass(frozen=True)
class ConnectorInvocation:
    """One run of one connector command. `files` maps config/catalog/state to their bytes.

    `job_id` and `attempt` are what Airbyte's platform calls the job and attempt: a sync's run id
    and attempt number; a command outside a sync (spec, check, discover) is a job of its own.
    """

    connector: ConnectorRef
    verb: Verb
    files: Mapping[str, bytes] = field(default_factory=dict)
    labels: RunLabels = field(default_factory=RunLabels)
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempt: int = 1

    @property
    def reads_stdin(self) -> bool:
        return self.verb == "write"

    @property
    def environment(self) -> dict[str, str]:
        """The variables every runtime sets for the connector: those Airbyte's platform sets
        (connectors read them, e.g. to choose the data channel), then the connection's `env`,
        which wins."""
        platform = {
            "WORKER_JOB_ID": self.job_id,
            "WORKER_JOB_ATTEMPT": str(self.attempt),
            "USE_STREAM_CAPABLE_STATE": "true",
            "DATA_CHANNEL_MEDIUM": "STDIO",
            "DATA_CHANNEL_FORMAT": "JSONL",
        }
        if self.connector.runtime != "local":
            platform["WORKER_CONNECTOR_IMAGE"] = self.connector.target
        return {**platform, **self.connector.options.env}


def protocol_args(verb: Verb, paths: Mapping[str, str]) -> list[str]:
    """`[verb, --config, P, --catalog, P, --state, P]` for the files present, in protocol order."""
    args: list[str] = [verb]
    for name in FILE_ORDER:
        if name in paths:
            args += [f"--{name}", paths[name]]
    return args


class ByteReader(Protocol):
    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" only at end of stream."""
        ...


class ByteWriter(Protocol):
    async def write(self, data: bytes) -> None:
        """Write all of data; waits while the reader is behind (backpressure)."""
        ...

    async def close(self) -> None:
        """Signal EOF to the connector. Idempotent; never raises if the reader is gone."""
        ...


class ConnectorProcess(Protocol):
    """A started connector: its byte streams and its life."""

    stdout: ByteReader
    stdin: ByteWriter | None  # only for verbs that read stdin (write)

    async def wait(self) -> int:
        """Wait for the exit code. Stderr has been fully drained to the log sink on return."""
        ...

    async def terminate(self, grace: float = 10.0) -> None:
        """TERM, then KILL after `grace` seconds; then release everything (files, containers)."""
        ...

    def stderr_tail(self) -> list[str]:
        """The last stderr lines, for error messages."""
        ...


class Runtime(Protocol):
    name: str

    async def start(self, invocation: ConnectorInvocation, log: LogSink) -> ConnectorProcess:
        """Start the connector; each stderr line goes to `log`. Raises FerryError subclasses."""
        ...

    async def fingerprint(self, ref: ConnectorRef) -> str | None:
        """A text that changes whenever the code `ref` runs changes (for caching its spec), found
        without starting the connector; None when this runtime cannot know that."""
        ...

    async def sweep_orphans(self) -> list[str]:
        """Before a sync starts connectors, remove what killed ferry processes left on this
        runtime (a SIGKILL leaves them no chance to); lines say what went. Raises FerryError
        when the engine cannot be asked."""
        ...

    async def close(self) -> None:
        """Release what the runtime holds (clients, listeners). Idempotent."""
        ...


def fingerprint_of(ref: ConnectorRef, **identity: object) -> str:
    """A runtime's fingerprint of `ref`: the runtime, the fixed arguments and what identifies the
    code (an image id, an executable's stat), as canonical JSON."""
    return json.dumps({"runtime": ref.runtime, "args": list(ref.args), **identity}, sort_keys=True)


class StderrTail:
    """Keeps the last lines of a connector's stderr for error messages."""

    def __init__(self, size: int = 20) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=size)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def lines(self) -> list[str]:
        return list(self._lines)


MAX_STDERR_LINE = 64 << 10
STDERR_CHUNK = 64 << 10


class StderrLines:
    """Cut a connector's stderr bytes into lines: each goes to the log sink and the tail. A
    "line" longer than MAX_STDERR_LINE (a progress bar that never ends its line) goes in
    pieces."""

    def __init__(self, log: Callable[[str], None], tail: StderrTail) -> None:
        self._log = log
        self._tail = tail
        self._partial = b""

    def feed(self, data: bytes | memoryview) -> None:
        buffer = self._partial + bytes(data)
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_STDERR_LINE:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    async def drain(self, stderr: ByteReader) -> None:
        """Feed everything a connector's stderr stream gives, to its end."""
        while chunk := await stderr.read(STDERR_CHUNK):
            self.feed(chunk)
        self.flush()

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._tail.add(line)
        with contextlib.suppress(Exception):  # a failing log sink must not break the data path
            self._log(line)
