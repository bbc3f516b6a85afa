"""What a finished sync reports to its callers (the Python API, `--metrics-file`): plain data.

`stream_result` is the ONE place where the engine's per-stream counters become the names users
see (records/bytes sent and committed); change it, and everything that reports follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferry.engine.stats import StreamStats
from ferry.store.base import SummedOverStreams

if TYPE_CHECKING:
    from ferry.engine.runner import SyncResult as EngineResult


@dataclass(frozen=True)
class StreamResult:
    """Counts of one stream in a sync (of its last attempt)."""

    stream: str
    namespace: str | None
    records_sent: int  # written to the destination
    bytes_sent: int
    records_committed: int  # covered by a state the destination confirmed
    bytes_committed: int
    states_committed: int
    records_rejected: int  # the destination's rejectedRecordCount

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SyncResult(SummedOverStreams):
    """The outcome of `ferry.sync`: one run of a connection, with its attempts' final counts."""

    connection: str
    run_id: int
    status: str  # succeeded | failed | cancelled
    attempts: int
    duration: float  # seconds the whole sync took: planning and every attempt
    streams: list[StreamResult]
    states_committed: int
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "run_id": self.run_id,
            "status": self.status,
            "attempts": self.attempts,
            "duration": self.duration,
            "records_sent": self.records_sent,
            "bytes_sent": self.bytes_sent,
            "records_committed": self.records_committed,
            "bytes_committed": self.bytes_committed,
            "records_rejected": self.records_rejected,
            "states_committed": self.states_committed,
            "streams": [s.as_dict() for s in self.streams],
            "warnings": list(self.warnings),
        }


def stream_result(stats: StreamStats) -> StreamResult:
    return StreamResult(
        stream=stats.name,
        namespace=stats.namespace,
        records_sent=stats.records_sent,
        bytes_sent=stats.bytes_sent,
        records_committed=stats.records_committed,
        bytes_committed=stats.bytes_committed,
        states_committed=stats.states_committed,
        records_rejected=stats.records_rejected,
    )


def sync_result(result: EngineResult, duration: float) -> SyncResult:
    return SyncResult(
        connection=result.connection,
        run_id=result.run_id,
        status=result.status,
        attempts=result.attempts,
        duration=duration,
        streams=[stream_result(s) for s in result.stats.streams.values()],
        states_committed=result.stats.states_committed,
        warnings=list(result.warnings),
    )
