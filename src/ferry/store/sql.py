"""The store's logic, written once in SQL for every backend (SQLite, PostgreSQL).

`SqlStore` holds every query and rule; a backend subclass supplies only what really differs:
how a transaction starts and fails, where the schema version lives, the column types of the
DDL (`ferry.store.schema`), and how a connection is locked and a run's owner judged alive.
Queries use `?` placeholders; the PostgreSQL backend translates them.

State blobs are stored as JSON text and are not decoded to be merged: only the rows a commit
changes are written.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ferry.errors import ConnectionBusy, InternalError, StoreError
from ferry.protocol import encode
from ferry.protocol.messages import (
    STATE_GLOBAL,
    STATE_LEGACY,
    STATE_STREAM,
    AirbyteStateMessage,
    StreamDescriptor,
)
from ferry.store.base import (
    ABANDONED,
    CONFIG_ROLES,
    FINAL_STATUSES,
    RUNNING,
    AttemptRecord,
    ConfigRole,
    RunRecord,
    Store,
    StoredConfig,
    StreamCounts,
    StreamTotals,
)
from ferry.store.owner import Owner, current_owner
from ferry.store.schema import MIGRATIONS, SCHEMA_VERSION, DdlTokens
from ferry.store.state import (
    EMPTY,
    ConnectionState,
    StateUpdate,
    state_update,
    streams_touched,
    without_stream,
)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A database connection inside a transaction, as the shared queries use it."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...


@dataclass(frozen=True)
class RunningRun:
    """A run recorded as running, and the process that owns it."""

    id: int
    owner: Owner
    started_at: float
    updated_at: float


class SqlStore(Store):
    ddl: DdlTokens
    where: str  # how messages name the store: a path, or a URL without its password

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- what a backend supplies ---------------------------------------------------------------

    @abc.abstractmethod
    def _write(self, batched: bool = False) -> AbstractContextManager[Db]:
        """One write transaction; writes of one connection's state never interleave.

        `batched`: the caller fetches nothing and reads no `rowcount`, so its statements may
        be sent together when it ends (PostgreSQL: as one query string, one round trip)."""

    def _commit_transaction(self, connection: str) -> AbstractContextManager[Db]:
        """The write transaction of a state commit of `connection` (batched: see `_write`);
        a backend may run it on a session of the connection's run rather than the store's."""
        return self._write(batched=True)

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Db]:
        """One read transaction: a consistent snapshot across several queries."""

    @abc.abstractmethod
    def _schema_version(self, db: Db) -> int: ...

    @abc.abstractmethod
    def _set_schema_version(self, db: Db, version: int) -> None: ...

    def _serialize(self, db: Db, connection: str) -> None:
        """Called first in a transaction that reads then writes `connection`'s state or runs."""

    def _check_commit(self, db: Db, connection: str, attempt_id: int | None) -> None:
        """Called first in a state commit: serialize it (`_serialize`) and raise StoreError
        if `attempt_id` is not one of `connection`'s attempts."""
        self._serialize(db, connection)
        if attempt_id is not None:
            found = db.execute(
                "SELECT 1 FROM attempts JOIN runs ON runs.id = attempts.run_id"
                " WHERE attempts.id = ? AND runs.connection = ?",
                (attempt_id, connection),
            ).fetchone()
            if found is None:
                raise StoreError(not_an_attempt_of(connection, attempt_id))

    @abc.abstractmethod
    def _alive(self, db: Db, runs: Sequence[RunningRun]) -> set[int]:
        """The ids of `runs` whose owning ferry may still be running them."""

    def _claim(self, connection: str, exclusive: bool) -> None:
        """Before a run starts: raise ConnectionBusy if another ferry holds `connection`."""

    def _claimed(self, db: Db, connection: str, run_id: int) -> None:
        """The run was inserted (not yet committed): bind the claim to it."""

    def _release(self, run_id: int | None) -> None:
        """The run ended (None: its start failed): give up its claim."""

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self, db: Db) -> None:
        """Bring the schema up to date; call inside a write transaction."""
        version = self._schema_version(db)
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                rendered = self.ddl.render(statement)
                if rendered:  # a dialect may have nothing to do in a step
                    db.execute(rendered)
        self._set_schema_version(db, SCHEMA_VERSION)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state store {self.where} has schema version {version}, written by a newer "
                f"ferry; this ferry knows versions up to {SCHEMA_VERSION}: upgrade ferry"
            )

    # -- state ---------------------------------------------------------------------------------

    def load_state(self, connection: str) -> ConnectionState:
        with self._read() as db:
            raw = _load_raw(db, connection)
        return ConnectionState(
            type=raw.type,
            streams={d: _decoded(v) for d, v in raw.streams.items()},
            shared_state=_decoded(raw.shared_state),
            data=_decoded(raw.data),
        )

    def commit_states(
        self,
        connection: str,
        attempt_id: int | None,
        states: Sequence[AirbyteStateMessage],
        *,
        progress: Iterable[StreamCounts] = (),
    ) -> None:
        states = list(states)
        progress = list(progress)
        if not states and not progress:
            return
        if attempt_id is None and progress:
            raise StoreError("progress counts need the attempt they belong to")
        update = state_update(states) if states else None
        # Nothing is read to be merged: the statements say what changes whatever is stored,
        # so a backend may send them all at once (one round trip, PostgreSQL's pipeline).
        with self._commit_transaction(connection) as db:
            self._check_commit(db, connection, attempt_id)
            now = time.time()
            if update is not None:
                _write_state(db, connection, update, attempt_id, now, self.ddl.namespace_key)
            if attempt_id is not None:
                _count_commit(db, attempt_id, states, progress, now, self.ddl.namespace_key)

    def reset_state(self, connection: str, stream: StreamDescriptor | None = None) -> bool:
        with self._write() as db:
            self._serialize(db, connection)
            old = _load_raw(db, connection)
            new = EMPTY if stream is None else without_stream(old, stream)
            if new is old or (old.is_empty and new.is_empty):
                return False
            update = StateUpdate(new, merges=False)
            _write_state(db, connection, update, None, time.time(), self.ddl.namespace_key)
            return True

    # -- generations ---------------------------------------------------------------------------

    def generations(self, connection: str) -> dict[StreamDescriptor, int]:
        with self._read() as db:
            return _generations(db, connection)

    def bump_generations(
        self, connection: str, streams: Sequence[StreamDescriptor]
    ) -> dict[StreamDescriptor, int]:
        with self._write() as db:
            self._serialize(db, connection)
            current = _generations(db, connection)
            bumped = {stream: current.get(stream, 0) + 1 for stream in streams}
            now = time.time()
            for stream, generation in bumped.items():
                db.execute(
                    "DELETE FROM stream_generation"
                    " WHERE connection = ? AND name = ? AND namespace IS ?",
                    (connection, stream.name, stream.namespace),
                )
                db.execute(
                    "INSERT INTO stream_generation"
                    " (connection, name, namespace, generation, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (connection, stream.name, stream.namespace, generation, now),
                )
            return bumped

    # -- connector configs ---------------------------------------------------------------------

    def load_connector_config(self, connection: str, role: ConfigRole) -> StoredConfig | None:
        with self._read() as db:
            row = db.execute(
                "SELECT config, file_fingerprint, updated_at FROM connector_configs"
                " WHERE connection = ? AND role = ?",
                (connection, role),
            ).fetchone()
        if row is None:
            return None
        config, fingerprint, updated_at = row
        when = datetime.fromtimestamp(updated_at, tz=UTC)  # NOT NULL in the schema
        return StoredConfig(connection, role, json.loads(config), fingerprint, when)

    def save_connector_config(
        self, connection: str, role: ConfigRole, config: dict[str, Any], file_fingerprint: str
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO connector_configs"
                " (connection, role, config, file_fingerprint, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (connection, role) DO UPDATE SET config = excluded.config,"
                " file_fingerprint = excluded.file_fingerprint, updated_at = excluded.updated_at",
                (connection, role, json.dumps(config), file_fingerprint, time.time()),
            )

    def reset_connector_config(self, connection: str, role: ConfigRole | None = None) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM connector_configs WHERE connection = ? AND role IN (?, ?)",
                (connection, *((role, role) if role else CONFIG_ROLES)),
            )
            return cursor.rowcount > 0

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        connection: str,
        *,
        full_refresh: bool = False,
        runtime: str | None = None,
        exclusive: bool = True,
    ) -> int:
        me = current_owner()
        with self._lock:
            self._claim(connection, exclusive)
            try:
                run_id = self._insert_run(connection, me, full_refresh, runtime, exclusive)
            except BaseException:
                self._release(None)
                raise
            return run_id

    def _insert_run(
        self, connection: str, me: Owner, full_refresh: bool, runtime: str | None, exclusive: bool
    ) -> int:
        with self._write() as db:
            self._serialize(db, connection)
            now = time.time()
            running = _running_runs(db, connection)
            alive = self._alive(db, running)
            for run in running:
                if run.id not in alive:
                    _abandon(db, run)
                elif exclusive:
                    raise busy(connection, run)
            (run_id,) = db.execute(
                "INSERT INTO runs (connection, status, started_at, updated_at, full_refresh,"
                " runtime, owner_host, owner_pid, owner_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    connection,
                    RUNNING,
                    now,
                    now,
                    int(full_refresh),
                    runtime,
                    me.host,
                    me.pid,
                    me.start,
                ),
            ).fetchone()
            self._claimed(db, connection, run_id)
            return int(run_id)

    def start_attempt(self, run_id: int) -> int:
        with self._write() as db:
            now = time.time()
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"there is no run {run_id}")
            if row[0] != RUNNING:
                raise StoreError(f"run {run_id} is {row[0]}: it cannot make another attempt")
            (number,) = db.execute(
                "SELECT coalesce(max(number), 0) + 1 FROM attempts WHERE run_id = ?", (run_id,)
            ).fetchone()
            (attempt_id,) = db.execute(
                "INSERT INTO attempts (run_id, number, status, started_at) VALUES (?, ?, ?, ?)"
                " RETURNING id",
                (run_id, number, RUNNING, now),
            ).fetchone()
            db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now, run_id))
            return int(attempt_id)

    def finish_attempt(
        self,
        attempt_id: int,
        status: str,
        stats: Iterable[StreamCounts] = (),
        error: str | None = None,
        failure_type: str | None = None,
    ) -> None:
        with self._write() as db:
            now = _end(db, "attempts", attempt_id, status, error, failure_type)
            _set_counts(db, attempt_id, list(stats), Counter(), self.ddl.namespace_key)
            db.execute(
                "UPDATE runs SET updated_at = ?"
                " WHERE id = (SELECT run_id FROM attempts WHERE id = ?)",
                (now, attempt_id),
            )

    def finish_run(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        failure_type: str | None = None,
    ) -> None:
        with self._write() as db:
            now = _end(db, "runs", run_id, status, error, failure_type)
            db.execute(
                "UPDATE attempts SET status = ?, ended_at = ? WHERE run_id = ? AND status = ?",
                (status, now, run_id, RUNNING),
            )
        self._release(run_id)

    def list_runs(self, connection: str, limit: int = 20) -> list[RunRecord]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE connection = ? ORDER BY id DESC LIMIT ?",
                (connection, limit),
            )
            return self._run_records(db, rows.fetchall())

    def holder(self, connection: str) -> RunningRun | None:
        """The newest live run of `connection`, if any (for a busy connection's message)."""
        with self._read() as db:
            running = _running_runs(db, connection)
            alive = self._alive(db, running)
        return next((run for run in reversed(running) if run.id in alive), None)

    def ensure_free(self, connection: str) -> None:
        holder = self.holder(connection)
        if holder is not None:
            raise busy(connection, holder)

    def _run_records(self, db: Db, rows: list[tuple[Any, ...]]) -> list[RunRecord]:
        running = [
            RunningRun(row[0], Owner(row[10], row[11], row[12]), row[3], row[5])
            for row in rows
            if row[2] == RUNNING
        ]
        alive = self._alive(db, running) if running else set()
        return [
            _run_record(db, row, abandoned=row[2] == RUNNING and row[0] not in alive)
            for row in rows
        ]


def busy(connection: str, run: RunningRun | None) -> ConnectionBusy:
    """The error for a second sync of a connection, naming the holder when it is known."""
    holder = (
        f"run {run.id}, started {_iso(run.started_at)} by ferry {run.owner}"
        if run is not None
        else "another ferry is starting it"
    )
    return ConnectionBusy(
        f"connection {connection!r} is already being synced: {holder}; wait for it to end, "
        "or use `ferry sync --wait` (two syncs of one connection at once would race on its state)"
    )


def not_an_attempt_of(connection: str, attempt_id: int) -> str:
    return f"attempt {attempt_id} is not an attempt of connection {connection!r}"


# -- values ------------------------------------------------------------------------------------


class _Json:
    """A state value as stored: JSON text, decoded only when the state is loaded."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _text(value: Any) -> str:
    if isinstance(value, _Json):
        return value.text
    return encode(value).decode()


def _decoded(value: Any) -> Any:
    return json.loads(value.text) if isinstance(value, _Json) else value


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _abandoned_error(owner: Owner, last_activity: float) -> str:
    return (
        f"the ferry process that ran this ({owner}) ended without finishing it; "
        f"last activity {_iso(last_activity)}"
    )


def _check_final(status: str) -> None:
    if status not in FINAL_STATUSES:
        raise InternalError(
            f"status must be one of {', '.join(sorted(FINAL_STATUSES))}: {status!r}"
        )


def _end(
    db: Db, table: str, row_id: int, status: str, error: str | None, failure_type: str | None
) -> float:
    """End row `row_id` of `table` (attempts or runs) with the final `status`; the time it
    ended. A run's end is also its last activity (`updated_at`). StoreError if there is no
    such row."""
    _check_final(status)
    now = time.time()
    touched = ", updated_at = ?" if table == "runs" else ""
    cursor = db.execute(
        f"UPDATE {table} SET status = ?, ended_at = ?, error = ?, failure_type = ?{touched}"
        " WHERE id = ?",
        (status, now, error, failure_type, *([now] if touched else []), row_id),
    )
    if cursor.rowcount != 1:
        raise StoreError(f"there is no {table.removesuffix('s')} {row_id}")
    return now


# -- queries (called inside a transaction) -----------------------------------------------------


def _load_raw(db: Db, connection: str) -> ConnectionState:
    """The stored state, its values left as `_Json` text."""
    head = db.execute(
        "SELECT type, shared FROM connection_state WHERE connection = ?", (connection,)
    )
    rows = db.execute(
        "SELECT name, namespace, state FROM stream_state WHERE connection = ?", (connection,)
    )
    row = head.fetchone()
    if row is None:
        return EMPTY
    kind, shared = row
    streams = {
        StreamDescriptor(name=name, namespace=namespace): _Json(state)
        for name, namespace, state in rows.fetchall()
    }
    return ConnectionState(
        type=kind,
        streams=streams,
        shared_state=_Json(shared) if kind == STATE_GLOBAL else None,
        data=_Json(shared) if kind == STATE_LEGACY else None,
    )


def _write_state(
    db: Db,
    connection: str,
    update: StateUpdate,
    attempt_id: int | None,
    now: float,
    namespace_key: str,
) -> None:
    """Store `update`; only the rows it changes are written. `namespace_key`: the dialect's
    key parts of the stream indexes (`DdlTokens.namespace_key`)."""
    new = update.state
    if new.is_empty:
        db.execute("DELETE FROM stream_state WHERE connection = ?", (connection,))
        db.execute("DELETE FROM connection_state WHERE connection = ?", (connection,))
        return
    # First the streams that go: those the update does not name, unless it merges into a
    # stored STREAM state (read here, before the next statement changes the type).
    sweep = "DELETE FROM stream_state WHERE connection = ?"
    params: list[Any] = [connection]
    if new.streams:
        rows = ", ".join(["(?, ?)"] * len(new.streams))
        sweep += (
            f" AND NOT EXISTS (SELECT 1 FROM (VALUES {rows}) AS kept WHERE kept.column1 = name"
            " AND (kept.column2 = namespace OR (kept.column2 IS NULL AND namespace IS NULL)))"
        )
        params += [part for d in new.streams for part in (d.name, d.namespace)]
    if update.merges:
        sweep += " AND coalesce((SELECT type FROM connection_state WHERE connection = ?), '') <> ?"
        params += [connection, STATE_STREAM]
    db.execute(sweep, params)
    shared = new.shared_state if new.type == STATE_GLOBAL else new.data
    db.execute(
        "INSERT INTO connection_state (connection, type, shared, updated_at, attempt_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection) DO UPDATE SET type = excluded.type,"
        " shared = excluded.shared, updated_at = excluded.updated_at,"
        " attempt_id = excluded.attempt_id",
        (connection, new.type, _text(shared), now, attempt_id),
    )
    _insert_rows(
        db,
        "INSERT INTO stream_state (connection, name, namespace, state, updated_at)",
        [(connection, d.name, d.namespace, _text(value), now) for d, value in new.streams.items()],
        f"ON CONFLICT (connection, name, {namespace_key}) DO UPDATE SET state = excluded.state,"
        " updated_at = excluded.updated_at WHERE stream_state.state <> excluded.state",
    )


_ROWS_PER_STATEMENT = 500  # bound the placeholders of a statement (SQLite: 32 766)


def _insert_rows(db: Db, insert: str, rows: Sequence[tuple[Any, ...]], conflict: str) -> None:
    """`insert VALUES (row), (row)... conflict`: a statement for many rows (none: nothing)."""
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        row = "(" + ", ".join("?" * len(chunk[0])) + ")"
        values = ", ".join([row] * len(chunk))
        db.execute(f"{insert} VALUES {values} {conflict}", [v for r in chunk for v in r])


def _count_commit(
    db: Db,
    attempt_id: int,
    states: Sequence[AirbyteStateMessage],
    progress: Sequence[StreamCounts],
    now: float,
    namespace_key: str,
) -> None:
    """Raise the attempt's committed-state counters and set its streams' progress counts."""
    if states:
        db.execute(
            "UPDATE attempts SET states_committed = states_committed + ? WHERE id = ?",
            (len(states), attempt_id),
        )
    db.execute(
        "UPDATE runs SET updated_at = ? WHERE id = (SELECT run_id FROM attempts WHERE id = ?)",
        (now, attempt_id),
    )
    touched = Counter(d for state in states for d in streams_touched(state))
    _set_counts(db, attempt_id, progress, touched, namespace_key)
    given = {counts.stream for counts in progress}
    _insert_rows(
        db,
        "INSERT INTO attempt_streams (attempt_id, name, namespace, states_committed)",
        [
            (attempt_id, d.name, d.namespace, count)
            for d, count in touched.items()
            if d not in given
        ],
        f"ON CONFLICT (attempt_id, name, {namespace_key}) DO UPDATE"
        " SET states_committed = attempt_streams.states_committed + excluded.states_committed",
    )


def _set_counts(
    db: Db,
    attempt_id: int,
    progress: Sequence[StreamCounts],
    states: Counter[StreamDescriptor],
    namespace_key: str,
) -> None:
    """Set the streams' counts in an attempt and add `states` to their committed states."""
    latest = {counts.stream: counts for counts in progress}  # a row is set once per statement
    _insert_rows(
        db,
        "INSERT INTO attempt_streams (attempt_id, name, namespace, states_committed, records,"
        " bytes, records_committed, bytes_committed, records_rejected)",
        [
            (
                attempt_id,
                counts.stream.name,
                counts.stream.namespace,
                states[counts.stream],
                counts.records_sent,
                counts.bytes_sent,
                counts.records_committed,
                counts.bytes_committed,
                counts.records_rejected,
            )
            for counts in latest.values()
        ],
        f"ON CONFLICT (attempt_id, name, {namespace_key}) DO UPDATE"
        " SET states_committed = attempt_streams.states_committed + excluded.states_committed,"
        " records = excluded.records, bytes = excluded.bytes,"
        " records_committed = excluded.records_committed,"
        " bytes_committed = excluded.bytes_committed, records_rejected = excluded.records_rejected",
    )


def _generations(db: Db, connection: str) -> dict[StreamDescriptor, int]:
    return {
        StreamDescriptor(name=name, namespace=namespace): generation
        for name, namespace, generation in db.execute(
            "SELECT name, namespace, generation FROM stream_generation WHERE connection = ?",
            (connection,),
        ).fetchall()
    }


def _running_runs(db: Db, connection: str) -> list[RunningRun]:
    rows = db.execute(
        "SELECT id, owner_host, owner_pid, owner_start, started_at, updated_at FROM runs"
        " WHERE connection = ? AND status = ? ORDER BY id",
        (connection, RUNNING),
    ).fetchall()
    return [
        RunningRun(run_id, Owner(host, pid, start), started_at, updated_at)
        for run_id, host, pid, start, started_at, updated_at in rows
    ]


def _abandon(db: Db, run: RunningRun) -> None:
    error = _abandoned_error(run.owner, run.updated_at)
    db.execute(
        "UPDATE runs SET status = ?, ended_at = updated_at, error = coalesce(error, ?)"
        " WHERE id = ?",
        (ABANDONED, error, run.id),
    )
    db.execute(
        "UPDATE attempts SET status = ?, ended_at = ?, error = coalesce(error, ?)"
        " WHERE run_id = ? AND status = ?",
        (ABANDONED, run.updated_at, error, run.id, RUNNING),
    )


_RUN_COLUMNS = (
    "id, connection, status, started_at, ended_at, updated_at, error, failure_type,"
    " full_refresh, runtime, owner_host, owner_pid, owner_start"
)


def _stream_order(totals: StreamTotals) -> tuple[bool, str, str]:
    d = totals.stream
    return (d.namespace is not None, d.namespace or "", d.name)


def _run_record(db: Db, row: tuple[Any, ...], *, abandoned: bool) -> RunRecord:
    (run_id, connection, status, started, ended, updated, error, failure_type) = row[:8]
    full_refresh, runtime, host, pid, start = row[8:]
    owner = Owner(host, pid, start)
    if abandoned:
        status, ended = ABANDONED, updated
        error = error or _abandoned_error(owner, updated)
    attempts = []
    for a_id, number, a_status, a_started, a_ended, a_error, a_failure, committed in db.execute(
        "SELECT id, number, status, started_at, ended_at, error, failure_type,"
        " states_committed FROM attempts WHERE run_id = ? ORDER BY number",
        (run_id,),
    ).fetchall():
        if abandoned and a_status == RUNNING:
            a_status, a_ended = ABANDONED, updated
        streams = tuple(
            sorted(
                (
                    StreamTotals(StreamDescriptor(name=n, namespace=ns), *counts)
                    for n, ns, *counts in db.execute(
                        "SELECT name, namespace, records, bytes, states_committed,"
                        " records_committed, bytes_committed, records_rejected"
                        " FROM attempt_streams WHERE attempt_id = ?",
                        (a_id,),
                    ).fetchall()
                ),
                key=_stream_order,
            )
        )
        attempts.append(
            AttemptRecord(
                id=a_id,
                number=number,
                status=a_status,
                started_at=datetime.fromtimestamp(a_started, tz=UTC),
                ended_at=_time(a_ended),
                error=a_error,
                failure_type=a_failure,
                states_committed=committed,
                streams=streams,
            )
        )
    return RunRecord(
        id=run_id,
        connection=connection,
        status=status,
        started_at=datetime.fromtimestamp(started, tz=UTC),
        ended_at=_time(ended),
        error=error,
        failure_type=failure_type,
        full_refresh=bool(full_refresh),
        runtime=runtime,
        owner=str(owner),
        attempts=tuple(attempts),
        streams=_sum_streams(attempts),
    )


def _sum_streams(attempts: list[AttemptRecord]) -> tuple[StreamTotals, ...]:
    totals: dict[StreamDescriptor, list[int]] = {}
    for attempt in attempts:
        for s in attempt.streams:
            counts = (
                s.records_sent,
                s.bytes_sent,
                s.states_committed,
                s.records_committed,
                s.bytes_committed,
                s.records_rejected,
            )
            summed = totals.setdefault(s.stream, [0] * len(counts))
            summed[:] = [a + b for a, b in zip(summed, counts, strict=True)]
    return tuple(
        sorted((StreamTotals(d, *counts) for d, counts in totals.items()), key=_stream_order)
    )
