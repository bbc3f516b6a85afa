"""`--metrics-file`: the outcome of a run in Prometheus' text format, written atomically.

Every metric is a gauge describing a connection's latest run, labelled with the connection (and
the stream); `ferry sync A.yaml B.yaml` writes every connection's in the one file: the file suits node_exporter's textfile collector (which reads `*.prom` files from a
directory) or `curl --data-binary @FILE` to a Pushgateway.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from ferry.engine.results import StreamResult, SyncResult, sync_result
from ferry.engine.runner import SyncResult as EngineResult
from ferry.errors import Cancelled, ConfigError, FerryError

STATUSES = ("succeeded", "failed", "cancelled")
_HELP = {
    "ferry_sync_last_run_timestamp_seconds": "When the latest run ended (Unix time).",
    "ferry_sync_status": "1 for the latest run's status, 0 for the others.",
    "ferry_sync_duration_seconds": "How long the latest run took, planning included.",
    "ferry_sync_attempts": "Attempts the latest run made.",
    "ferry_sync_run_id": "The latest run's id in the state store.",
    "ferry_sync_states_committed": "States committed by the latest run.",
    "ferry_sync_records_sent": "Records written to the destination, per stream.",
    "ferry_sync_bytes_sent": "Bytes of records written to the destination, per stream.",
    "ferry_sync_records_committed": "Records covered by a committed state, per stream.",
    "ferry_sync_bytes_committed": "Bytes of records covered by a committed state, per stream.",
    "ferry_sync_stream_states_committed": "States committed by the latest run, per stream.",
    "ferry_sync_records_rejected": "Records the destination rejected, per stream.",
}
_PER_STREAM = {
    "ferry_sync_records_sent": "records_sent",
    "ferry_sync_bytes_sent": "bytes_sent",
    "ferry_sync_records_committed": "records_committed",
    "ferry_sync_bytes_committed": "bytes_committed",
    "ferry_sync_stream_states_committed": "states_committed",
    "ferry_sync_records_rejected": "records_rejected",
}


class RunMetrics(NamedTuple):
    """A connection's latest run as the metrics tell it; `result` is None when the sync failed
    before a run began."""

    connection: str
    status: str
    duration: float
    result: SyncResult | None = None


def run_metrics(connection: str, outcome: EngineResult | FerryError, duration: float) -> RunMetrics:
    """The metrics of a sync that returned `outcome` (or raised it) after `duration` seconds."""
    if isinstance(outcome, FerryError):
        status = "cancelled" if isinstance(outcome, Cancelled) else "failed"
        return RunMetrics(connection, status, duration)
    summary = sync_result(outcome, duration)
    return RunMetrics(connection, summary.status, duration, summary)


def write_run_metrics(path: Path | None, runs: Sequence[RunMetrics]) -> None:
    """`--metrics-file PATH`: the runs' metrics in one file; nothing without the option."""
    if path is not None:
        write_metrics_file(path, render_metrics(runs))


def render_metrics(runs: Sequence[RunMetrics]) -> str:
    """The metrics of the runs, every family once with a sample set per connection."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in _HELP}
    now = time.time()
    for run in runs:
        for name, labels, value in _samples_of(run, now):
            samples[name].append((labels, value))
    return "".join(_family(name, found) for name, found in samples.items() if found)


def _samples_of(run: RunMetrics, now: float) -> Iterator[tuple[str, dict[str, str], float]]:
    labels = {"connection": run.connection}
    yield "ferry_sync_last_run_timestamp_seconds", labels, now
    for status in STATUSES:
        yield "ferry_sync_status", {**labels, "status": status}, float(status == run.status)
    yield "ferry_sync_duration_seconds", labels, run.duration
    result = run.result
    if result is None:
        return
    yield "ferry_sync_attempts", labels, result.attempts
    yield "ferry_sync_run_id", labels, result.run_id
    yield "ferry_sync_states_committed", labels, result.states_committed
    for stream in result.streams:
        for name, value in _stream_values(stream):
            yield name, {**labels, **_stream_labels(stream)}, value


def _stream_values(stream: StreamResult) -> Iterator[tuple[str, float]]:
    for name, attribute in _PER_STREAM.items():
        value = getattr(stream, attribute)
        if value is not None:
            yield name, value


def _stream_labels(stream: StreamResult) -> dict[str, str]:
    return {"stream": stream.stream, "namespace": stream.namespace or ""}


def _family(name: str, samples: list[tuple[dict[str, str], float]]) -> str:
    lines = [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        lines.append(f"{name}{{{text}}} {float(value)!r}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_metrics_file(path: Path, text: str) -> None:
    """Replace `path` at once (a collector never reads half a file): temp file, then rename."""
    directory = path.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise ConfigError(f"cannot write the metrics file {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a collector's user
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the metrics file {path}: {error.strerror}") from None
