"""Helpers for the first-party connector tests: every connector runs as a real process.

(A module of its own, not conftest.py: several test directories have a conftest.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parents[1] / "connectors" / "data"
BIN = Path(sys.executable).parent


def command(name: str) -> list[str]:
    """The console script of a connector (installed with the project)."""
    script = BIN / name
    assert script.exists(), f"{script} is missing: is the project installed in this venv?"
    return [str(script)]


def module_command(name: str) -> list[str]:
    return [sys.executable, "-m", f"ferry_connectors.{name.replace('-', '_')}"]


def parse_lines(output: bytes) -> list[dict[str, Any]]:
    messages = []
    for line in output.splitlines():
        if line.strip():
            messages.append(json.loads(line))
    return messages


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def messages(self) -> list[dict[str, Any]]:
        return parse_lines(self.stdout)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.of_type("RECORD")]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m["trace"]["error"] for m in self.of_type("TRACE") if m["trace"]["type"] == "ERROR"]

    def status(self) -> dict[str, Any]:
        statuses = [m["connectionStatus"] for m in self.of_type("CONNECTION_STATUS")]
        assert len(statuses) == 1, self.stdout
        status: dict[str, Any] = statuses[0]
        return status


def run(argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 300) -> Result:
    done = subprocess.run(
        list(argv), input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout
    )
    return Result(done.returncode, done.stdout, done.stderr)


def configured_catalog(
    streams: list[dict[str, Any]],
    destination_sync_mode: str = "append",
    sync_mode: str = "incremental",
    **extra: Any,
) -> dict[str, Any]:
    """A configured catalog with the same modes for every discovered stream."""
    configured = []
    for stream in streams:
        entry: dict[str, Any] = {
            "stream": stream,
            "sync_mode": sync_mode,
            "destination_sync_mode": destination_sync_mode,
        }
        if stream.get("default_cursor_field"):
            entry["cursor_field"] = stream["default_cursor_field"]
        if stream.get("source_defined_primary_key"):
            entry["primary_key"] = stream["source_defined_primary_key"]
        entry.update(extra)
        configured.append(entry)
    return {"streams": configured}


def faker_catalog() -> dict[str, Any]:
    catalog: dict[str, Any] = json.loads((DATA / "source_faker_catalog.json").read_text())
    return catalog
