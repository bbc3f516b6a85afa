"""Counters of a sync, per stream. Plain data: the progress display polls them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ferry.store.base import SummedOverStreams


@dataclass
class StreamStats:
    """Records pass three points: routed (decoded from the source's output, counted when
    routed), sent (the write of them to the destination's stdin returned) and committed (a
    state covering them was echoed by the destination and saved)."""

    name: str
    namespace: str | None = None
    records_routed: int = 0
    bytes_routed: int = 0
    records_sent: int = 0
    bytes_sent: int = 0
    records_committed: int = 0
    bytes_committed: int = 0
    records_since_state: int = 0  # for comparing with a STREAM state's sourceStats
    states_sent: int = 0
    states_committed: int = 0
    records_rejected: int = 0  # the destination's rejectedRecordCount in its echoes
    status: str | None = None  # last STREAM_STATUS the source reported

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.name,
            "namespace": self.namespace,
            "records_sent": self.records_sent,
            "bytes_sent": self.bytes_sent,
            "records_committed": self.records_committed,
            "bytes_committed": self.bytes_committed,
            "states_sent": self.states_sent,
            "states_committed": self.states_committed,
            "records_rejected": self.records_rejected,
        }


@dataclass
class SyncStats(SummedOverStreams):
    """Every stream's counters, and their totals (records_sent, ... summed over `streams`)."""

    streams: dict[tuple[str, str | None], StreamStats] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    records_since_state: int = 0  # all streams, for GLOBAL/LEGACY sourceStats
    states_sent: int = 0
    states_committed: int = 0
    mismatches: list[str] = field(default_factory=list)
    records_rejected_unattributed: int = 0  # rejected under a GLOBAL state of several streams

    def stream(self, name: str, namespace: str | None) -> StreamStats:
        key = (name, namespace)
        found = self.streams.get(key)
        if found is None:
            found = self.streams[key] = StreamStats(name, namespace)
        return found

    @property
    def records_rejected(self) -> int:
        return self.records_rejected_unattributed + super().records_rejected

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
