"""What every fault test shares: a connection between fault connectors, ferry runs of it, and the
checks a user relies on after any fault.

The source is tests/engine/data/scripted_source.py (stream `items`, ids 1..count, a STREAM state
every `state_every` records, resuming after the state's cursor); the destination is
tests/engine/data/fault_destination.py, which keeps exactly what it committed (its rows file) and the cursors
it echoed. Each fault is set in a connector's config and, with `once`, happens on the first run
only, so a re-run can show that nothing was lost or duplicated.

Every ferry runs with a marker in its environment that all processes of the sync inherit; after
the run, `leftovers` finds any of them still alive by reading /proc/PID/environ (the process
tree, not names).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry.store import open_store

REPO = Path(__file__).resolve().parents[2]
ENGINE_DATA = REPO / "tests" / "engine" / "data"
SOURCE = str(ENGINE_DATA / "scripted_source.py")
WRAPPED_SOURCE = str(ENGINE_DATA / "wrapped_source.sh")
DESTINATION = str(ENGINE_DATA / "fault_destination.py")
MARK = "FERRY_FAULT_MARK"
CONTAINER_IMAGE = "ferry-test/source-generator:dev"  # any image with python3 does
HANG_GUARD = 120.0  # a run that takes longer than this is a hang


@dataclass
class Result:
    code: int
    summary: dict[str, Any]
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("ferry: error:")]


@dataclass
class Connection:
    """One connection of a fault test: its files and the ferry runs of it."""

    tmp: Path
    count: int = 60
    state_every: int = 10
    name: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:8]}")
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    # docker or podman: the same connectors run in images that have python3, with the test
    # connectors' dir at /faults and `tmp` at /work.
    runtime: str = "local"

    @property
    def path(self) -> Path:
        return self.tmp / "connection.yaml"

    @property
    def once(self) -> str:
        return self.inside("fault-happened")

    def inside(self, name: str) -> str:
        """Where the connectors see the file `name` of `tmp`."""
        return str(self.tmp / name) if self.runtime == "local" else f"/work/{name}"

    def _connector(self, script: str, config: dict[str, Any]) -> dict[str, Any]:
        if self.runtime == "local":
            return {"connector": script, "config": config}
        return {
            "connector": f"{self.runtime}:{CONTAINER_IMAGE}",
            "entrypoint": f"python3 /faults/{Path(script).name}",
            "volumes": {str(ENGINE_DATA): "/faults", str(self.tmp): "/work"},
            "config": config,
        }

    def write(
        self,
        source: dict[str, Any] | None = None,
        destination: dict[str, Any] | None = None,
        *,
        source_connector: str = SOURCE,
        **fields: Any,
    ) -> Connection:
        """The connection file; `source`/`destination` add to each connector's config."""
        source_config = {"count": self.count, "state_every": self.state_every, "once": self.once}
        destination_config = {
            "rows_file": self.inside("rows"),
            "echoes_file": self.inside("echoes"),
            "once": self.once,
        }
        connection = {
            "name": self.name,
            "source": self._connector(source_connector, source_config | (source or {})),
            "destination": self._connector(DESTINATION, destination_config | (destination or {})),
            **fields,
        }
        self.path.write_text(yaml.safe_dump(connection))
        return self

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`ferry sync --json` in a session of its own (its group is what a terminal signals)."""
        return subprocess.Popen(
            [sys.executable, "-m", "ferry", "sync", str(self.path), "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, MARK: self.mark},
            start_new_session=True,
        )

    def sync(self, *args: str) -> Result:
        return finish(self.start("--retries", "0", *args))

    def ferry(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ferry", *args],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            env={**os.environ, MARK: self.mark},
            check=False,
        )

    def committed_cursor(self) -> int:
        """The cursor of ferry's committed state (0 when nothing was committed), read from the
        store in this process (as `ferry state show` does; a process costs a second)."""
        with open_store() as store:
            states = store.load_state(self.name).to_messages()
        cursors = [s.stream.stream_state["cursor"] for s in states if s.stream is not None]
        return max(cursors, default=0)

    def echoed_cursor(self) -> int:
        """The last cursor the destination echoed (after making the rows before it durable)."""
        echoes = self.tmp / "echoes"
        lines = echoes.read_text().split() if echoes.exists() else []
        return int(lines[-1]) if lines else 0

    def rows(self) -> list[int]:
        rows = self.tmp / "rows"
        return [int(line) for line in rows.read_text().split()] if rows.exists() else []

    def wait_for_echo(self, at_least: int = 1) -> None:
        """Until the destination has echoed `at_least` states (the sync is under way)."""
        deadline = time.monotonic() + HANG_GUARD
        echoes = self.tmp / "echoes"
        while not echoes.exists() or len(echoes.read_text().split()) < at_least:
            assert time.monotonic() < deadline, "the sync never got going"
            time.sleep(0.05)


def finish(process: subprocess.Popen[str], err_read: str = "") -> Result:
    """Wait for a started ferry; `err_read` is what the test already read of its stderr."""
    try:
        out, err = process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"ferry hung; stderr:\n{err_read}{err}") from None
    summary = json.loads(out) if out.strip() else {}
    return Result(process.returncode, summary, err_read + err)


def read_stderr_until(process: subprocess.Popen[str], text: str) -> str:
    """ferry's stderr up to the line holding `text` (ferry says it, so the test can go on)."""
    assert process.stderr is not None
    read = ""
    while text not in read:
        line = process.stderr.readline()
        assert line, f"ferry ended without saying {text!r}:\n{read}"
        read += line
    return read


def leftovers(mark: str, wait: float = 30.0) -> list[str]:
    """Processes (pid and command) still alive with the marker in their environment, after
    giving them `wait` seconds to go."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            if f"{MARK}={mark}".encode() in environ.split(b"\0") and state not in ("Z", "X"):
                found.append(f"{entry.name} {command}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def containers_left(connection: Connection) -> list[str]:
    """Containers (docker) or pods (podman) ferry made for the connection that still exist."""
    if connection.runtime == "local":
        return []
    if connection.runtime == "docker":
        listing = ["docker", "ps", "-a", "--format", "{{.Names}}"]
    else:
        listing = ["podman", "pod", "ps", "--format", "{{.Name}}"]
    listed = subprocess.run(
        [*listing, "--filter", f"label=ferry.connection={connection.name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


def assert_fails_clearly(result: Result, code: int, *cause: str) -> None:
    """One `ferry: error:` line naming the cause, the exit code, and no traceback of ferry's."""
    assert result.code == code, result.err
    assert len(result.error_lines) == 1, result.err
    for text in cause:
        assert text in result.error_lines[0], result.err
    assert "Traceback" not in result.err, result.err


def assert_recovers(
    connection: Connection, ferry_home: Path, *, rerun_removes_containers: bool = False
) -> Result:
    """The user's three checks after a fault: nothing of the sync is left running, committed
    state is not past the destination's last echo, and a re-run delivers every record, with
    duplicates only of records the destination committed but ferry never heard it confirm.
    `rerun_removes_containers`: a killed ferry's containers are removed by the re-run."""
    assert leftovers(connection.mark) == [], "processes of the sync outlived it"
    assert rerun_removes_containers or containers_left(connection) == []
    committed, echoed = connection.committed_cursor(), connection.echoed_cursor()
    assert committed <= echoed, "ferry committed a state the destination never echoed"
    rerun = connection.sync()
    assert rerun.code == 0, rerun.err
    assert rerun.summary["status"] == "succeeded"
    rows = connection.rows()
    assert sorted(set(rows)) == list(range(1, connection.count + 1))
    duplicated = {row for row, seen in Counter(rows).items() if seen > 1}
    assert all(committed < row <= echoed for row in duplicated), sorted(duplicated)
    assert connection.committed_cursor() == connection.count
    (stream,) = rerun.summary["streams"]
    assert stream["records_sent"] == stream["records_committed"] == connection.count - committed
    assert leftovers(connection.mark) == []
    assert containers_left(connection) == []
    run_dir = ferry_home / "run"
    assert not run_dir.exists() or list(run_dir.iterdir()) == [], "private files left behind"
    return rerun
