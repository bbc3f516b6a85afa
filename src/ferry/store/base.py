"""The store interface: connection state, run history and connector configs.

Synchronous and small on purpose: every call is one short transaction (a few milliseconds), so
the engine calls it straight from its event loop. SQLite and PostgreSQL implement it with the
same SQL (`ferry.store.sql`); the state merge rules live in `ferry.store.state`.

Generations: one number per connection and stream, raised by every refresh, clear and full
refresh (see `bump_generations`); the configured catalog carries it to the destination.

Runs and attempts: a run is one `ferry sync` of a connection; it makes one or more attempts (a
retry after a transient failure is a new attempt that resumes from the committed state). Every
run records the host, pid and process start time of the ferry that owns it, so a run left
"running" by a ferry that was killed is reported as `abandoned`, and is marked so for good when
the next run of that connection starts.

Connector configs: a connector may send a CONTROL message with an updated config (a rotated OAuth
refresh token); the store keeps the last one per connection and role, with the fingerprint of
the connection file's config it replaced, so an edit of the file can be told apart.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from ferry.protocol.messages import AirbyteStateMessage, StreamDescriptor
from ferry.store.state import ConnectionState

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
ABANDONED = "abandoned"  # the owning ferry process is gone; set by the store, never passed in

ConfigRole = Literal["source", "destination"]
CONFIG_ROLES: tuple[ConfigRole, ...] = ("source", "destination")

FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED})


class _CountsOfAStream(Protocol):
    @property
    def records_sent(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def records_committed(self) -> int: ...
    @property
    def bytes_committed(self) -> int: ...
    @property
    def records_rejected(self) -> int: ...


class SummedOverStreams:
    """The totals of a run (or sync) as properties, summed over its `streams` (a mapping's
    values: the engine's live counters are keyed by stream)."""

    streams: Sequence[_CountsOfAStream] | Mapping[Any, _CountsOfAStream]

    def _counted(self) -> Iterable[_CountsOfAStream]:
        return self.streams.values() if isinstance(self.streams, Mapping) else self.streams

    @property
    def records_sent(self) -> int:
        return sum(s.records_sent for s in self._counted())

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self._counted())

    @property
    def records_committed(self) -> int:
        return sum(s.records_committed for s in self._counted())

    @property
    def bytes_committed(self) -> int:
        return sum(s.bytes_committed for s in self._counted())

    @property
    def records_rejected(self) -> int:
        return sum(s.records_rejected for s in self._counted())


@dataclass(frozen=True)
class StreamCounts:
    """What the engine counted for one stream in one attempt: records and bytes sent (written
    to the destination) and committed (covered by a state the destination echoed)."""

    stream: StreamDescriptor
    records_sent: int = 0
    bytes_sent: int = 0
    records_committed: int = 0
    bytes_committed: int = 0
    records_rejected: int = 0  # the destination's rejectedRecordCount


@dataclass(frozen=True)
class StreamTotals:
    """Counts of one stream in an attempt or a run; `states_committed` is kept by the store."""

    stream: StreamDescriptor
    records_sent: int
    bytes_sent: int
    states_committed: int
    records_committed: int = 0
    bytes_committed: int = 0
    records_rejected: int = 0


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    number: int  # 1, 2, ... within its run
    status: str
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    failure_type: str | None
    states_committed: int
    streams: tuple[StreamTotals, ...]


@dataclass(frozen=True)
class RunRecord(SummedOverStreams):
    id: int
    connection: str
    status: str  # running | succeeded | failed | cancelled | abandoned
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    failure_type: str | None
    full_refresh: bool
    runtime: str | None
    owner: str  # "pid 1234 on host"
    attempts: tuple[AttemptRecord, ...]
    streams: tuple[StreamTotals, ...]  # summed over the attempts

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    @property
    def states_committed(self) -> int:
        return sum(a.states_committed for a in self.attempts)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None while running."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class StoredConfig:
    """The config a connector last sent for one side of a connection (a CONTROL message)."""

    connection: str
    role: ConfigRole
    config: dict[str, Any]
    file_fingerprint: str  # of the connection file's config when this one was received
    updated_at: datetime


class Store(abc.ABC):
    """Connection state and run history. Use as a context manager, or call `close()`."""

    url: str

    # -- state -----------------------------------------------------------------------------

    @abc.abstractmethod
    def load_state(self, connection: str) -> ConnectionState:
        """The committed state of a connection (empty if it has none)."""

    @abc.abstractmethod
    def commit_states(
        self,
        connection: str,
        attempt_id: int | None,
        states: Sequence[AirbyteStateMessage],
        *,
        progress: Iterable[StreamCounts] = (),
    ) -> None:
        """Apply `states` in order, all or nothing, in one transaction.

        `attempt_id` (an attempt of a run of this connection, or None) gets its committed-state
        counters raised in the same transaction; `progress` optionally records the attempt's
        per-stream counts as of this commit, so they survive if ferry is killed.
        Raises ProtocolViolation for an unusable state message (nothing is applied) and
        StoreError when the attempt is not one of this connection's or the store fails.
        """

    @abc.abstractmethod
    def reset_state(self, connection: str, stream: StreamDescriptor | None = None) -> bool:
        """Forget the state of one stream, or of the whole connection; False if there was none.

        ConfigError for one stream of a LEGACY state (a single blob for every stream).
        """

    # -- generations -----------------------------------------------------------------------

    @abc.abstractmethod
    def generations(self, connection: str) -> dict[StreamDescriptor, int]:
        """The current generation of each stream that has one (a stream without one is at 0).

        A generation counts the refreshes and clears of a stream (as Airbyte's platform keeps
        them): rows a destination wrote carry it, so a truncating sync can drop older ones.
        """

    @abc.abstractmethod
    def bump_generations(
        self, connection: str, streams: Sequence[StreamDescriptor]
    ) -> dict[StreamDescriptor, int]:
        """Raise the generation of `streams` by one, in one transaction; their new generations."""

    # -- runs ------------------------------------------------------------------------------

    @abc.abstractmethod
    def start_run(
        self,
        connection: str,
        *,
        full_refresh: bool = False,
        runtime: str | None = None,
        exclusive: bool = True,
    ) -> int:
        """Record a new running run owned by this process and return its id.

        Runs of this connection whose owner is gone are marked `abandoned` first. With
        `exclusive`, a run of the connection still owned by a live ferry is ConnectionBusy
        (naming it): two syncs of one connection at once would race on its state. SQLite judges
        liveness on this host only; PostgreSQL by a lock the run holds on the server, on any
        host. The claim ends with `finish_run` or `close`.
        """

    @abc.abstractmethod
    def ensure_free(self, connection: str) -> None:
        """ConnectionBusy, naming the holder, if a live ferry syncs `connection` right now.

        A check made early, before any connector runs, so a second sync is refused at once;
        only `start_run` claims the connection."""

    @abc.abstractmethod
    def start_attempt(self, run_id: int) -> int:
        """Record the next attempt of a running run and return its id."""

    @abc.abstractmethod
    def finish_attempt(
        self,
        attempt_id: int,
        status: str,
        stats: Iterable[StreamCounts] = (),
        error: str | None = None,
        failure_type: str | None = None,
    ) -> None:
        """End an attempt: succeeded, failed or cancelled, with its final per-stream counts."""

    @abc.abstractmethod
    def finish_run(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        failure_type: str | None = None,
    ) -> None:
        """End a run (attempts still running end with the same status)."""

    @abc.abstractmethod
    def list_runs(self, connection: str, limit: int = 20) -> list[RunRecord]:
        """The connection's latest runs, newest first."""

    # -- connector configs -----------------------------------------------------------------

    @abc.abstractmethod
    def load_connector_config(self, connection: str, role: ConfigRole) -> StoredConfig | None:
        """The config the connection's `role` connector last sent, or None."""

    @abc.abstractmethod
    def save_connector_config(
        self, connection: str, role: ConfigRole, config: dict[str, Any], file_fingerprint: str
    ) -> None:
        """Keep `config` (replacing any earlier one), durably, before returning."""

    @abc.abstractmethod
    def reset_connector_config(self, connection: str, role: ConfigRole | None = None) -> bool:
        """Forget the stored config of one side, or of both; False if there was none."""

    # -- lifetime --------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; further calls fail."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def redacted(url: str) -> str:
    """The URL without its password, fit for a message."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparsable url>"
