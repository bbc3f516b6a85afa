"""Counters of a sync, per stream. Plain data: the progress display polls them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamStats:
    name: str
    namespace: str | None = None
    records: int = 0
    bytes: int = 0
    records_since_state: int = 0  # for comparing with a STREAM state's sourceStats
    states_sent: int = 0
    states_committed: int = 0
    status: str | None = None  # last STREAM_STATUS the source reported

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.name,
            "namespace": self.namespace,
            "records": self.records,
            "bytes": self.bytes,
            "states_sent": self.states_sent,
            "states_committed": self.states_committed,
        }


@dataclass
class SyncStats:
    streams: dict[tuple[str, str | None], StreamStats] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    records_since_state: int = 0  # all streams, for GLOBAL/LEGACY sourceStats
    states_sent: int = 0
    states_committed: int = 0
    mismatches: list[str] = field(default_factory=list)

    def stream(self, name: str, namespace: str | None) -> StreamStats:
        key = (name, namespace)
        found = self.streams.get(key)
        if found is None:
            found = self.streams[key] = StreamStats(name, namespace)
        return found

    @property
    def records(self) -> int:
        return sum(s.records for s in self.streams.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams.values())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
