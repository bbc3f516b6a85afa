"""The SQLite store: one file, safe against SIGKILL at any instant and shared by processes.

- WAL journal: a commit appends to the log and is atomic; a process killed mid-transaction
  leaves a log tail that the next opener ignores. Readers never block the writer.
- `synchronous = FULL`: the log is fsynced at every commit. A committed state is the point of
  no return (the destination has already made the data durable), so losing it to a power cut
  would make the next sync re-read data the destination already holds. Commits are rare (one per
  batch of destination-confirmed states) and cost one fsync each, ~ms. A SIGKILL alone would
  need no more than NORMAL: the log is written to the OS before COMMIT returns.
- Every write is one `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so two
  ferry processes queue (busy timeout) instead of failing on a lock upgrade, and the
  read-merge-write of a state commit cannot lose a concurrent update.
- `PRAGMA user_version` holds the schema version; `MIGRATIONS[i]` moves version i to i+1.

State blobs are stored as JSON text and are not decoded to be merged: only the rows a commit
changes are written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError, InternalError, StoreError
from ferry.protocol import encode
from ferry.protocol.messages import (
    STATE_GLOBAL,
    STATE_LEGACY,
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
from ferry.store.state import EMPTY, ConnectionState, apply_states, streams_touched, without_stream

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's transaction

_STATUS_CHECK = "CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'abandoned'))"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1
    (
        """CREATE TABLE connection_state (
            connection TEXT PRIMARY KEY,
            type TEXT NOT NULL CHECK (type IN ('STREAM', 'GLOBAL', 'LEGACY')),
            shared TEXT NOT NULL,  -- JSON: GLOBAL shared_state, LEGACY data, null for STREAM
            updated_at REAL NOT NULL,
            attempt_id INTEGER  -- the attempt whose commit last changed it
        )""",
        """CREATE TABLE stream_state (
            connection TEXT NOT NULL
                REFERENCES connection_state (connection) ON DELETE CASCADE,
            name TEXT NOT NULL,
            namespace TEXT,
            state TEXT NOT NULL,  -- JSON
            updated_at REAL NOT NULL
        )""",
        # NULL and '' are different namespaces: map NULL to a blob, which equals no text.
        """CREATE UNIQUE INDEX stream_state_key
            ON stream_state (connection, name, coalesce(namespace, x'00'))""",
        f"""CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            connection TEXT NOT NULL,
            status TEXT NOT NULL {_STATUS_CHECK},
            started_at REAL NOT NULL,
            ended_at REAL,
            updated_at REAL NOT NULL,  -- last activity: start, attempts, state commits
            error TEXT,
            failure_type TEXT,
            full_refresh INTEGER NOT NULL DEFAULT 0,
            runtime TEXT,
            owner_host TEXT NOT NULL,
            owner_pid INTEGER NOT NULL,
            owner_start TEXT  -- process start time, tells a reused pid apart
        )""",
        "CREATE INDEX runs_by_connection ON runs (connection, id)",
        f"""CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            status TEXT NOT NULL {_STATUS_CHECK},
            started_at REAL NOT NULL,
            ended_at REAL,
            error TEXT,
            failure_type TEXT,
            states_committed INTEGER NOT NULL DEFAULT 0,
            UNIQUE (run_id, number)
        )""",
        """CREATE TABLE attempt_streams (
            attempt_id INTEGER NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            namespace TEXT,
            records INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            states_committed INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE UNIQUE INDEX attempt_streams_key
            ON attempt_streams (attempt_id, name, coalesce(namespace, x'00'))""",
    ),
    # 1 -> 2: records/bytes are those sent to the destination; these, those it committed;
    # generations (refreshes, clears); rejected records; configs sent by connectors in
    # CONTROL messages (rotated OAuth tokens).
    (
        "ALTER TABLE attempt_streams ADD COLUMN records_committed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE attempt_streams ADD COLUMN bytes_committed INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE stream_generation (
            connection TEXT NOT NULL,
            name TEXT NOT NULL,
            namespace TEXT,
            generation INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE UNIQUE INDEX stream_generation_key
            ON stream_generation (connection, name, coalesce(namespace, x'00'))""",
        "ALTER TABLE attempt_streams ADD COLUMN records_rejected INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE connector_configs (
            connection TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('source', 'destination')),
            config TEXT NOT NULL,  -- JSON
            file_fingerprint TEXT NOT NULL,  -- of the connection file's config it replaced
            updated_at REAL NOT NULL,
            PRIMARY KEY (connection, role)
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


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


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, url: str | None = None) -> None:
        self.path = str(path)
        self.url = url or f"sqlite://{self.path}"
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        try:
            if self.path != ":memory:":
                _create_private(Path(self.path))
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # guarded by self._lock
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"cannot open the state store {self.path}: {e}") from None
        except OSError as e:
            self.close()
            raise StoreError(f"cannot create the state store {self.path}: {e}") from None
        except StoreError:
            self.close()
            raise

    # -- plumbing --------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the state store {self.path} is closed")
        return self._db

    def _migrate(self) -> None:
        db = self._conn()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._check_version(version)
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process?
            self._check_version(version)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state store {self.path} has schema version {version}, written by a newer "
                f"ferry; this ferry knows versions up to {SCHEMA_VERSION}: upgrade ferry"
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock from its first statement."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"cannot write the state store {self.path}: {e}") from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"cannot write the state store {self.path}: {e}") from None
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across several queries."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN")
                yield db
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the state store {self.path}: {e}") from None
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- state -----------------------------------------------------------------------------

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
        with self._write() as db:
            now = time.time()
            if states:
                old = _load_raw(db, connection)
                new = apply_states(old, states)
                _write_state(db, connection, old, new, attempt_id, now)
            if attempt_id is not None:
                _count_commit(db, connection, attempt_id, states, now)
                for counts in progress:
                    _set_counts(db, attempt_id, counts)
            elif progress:
                raise StoreError("progress counts need the attempt they belong to")

    def reset_state(self, connection: str, stream: StreamDescriptor | None = None) -> bool:
        with self._write() as db:
            old = _load_raw(db, connection)
            new = EMPTY if stream is None else without_stream(old, stream)
            if new is old or (old.is_empty and new.is_empty):
                return False
            _write_state(db, connection, old, new, None, time.time())
            return True

    # -- generations -----------------------------------------------------------------------

    def generations(self, connection: str) -> dict[StreamDescriptor, int]:
        with self._read() as db:
            return _generations(db, connection)

    def bump_generations(
        self, connection: str, streams: Sequence[StreamDescriptor]
    ) -> dict[StreamDescriptor, int]:
        with self._write() as db:
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

    # -- connector configs -----------------------------------------------------------------

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

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        connection: str,
        *,
        full_refresh: bool = False,
        runtime: str | None = None,
        exclusive: bool = True,
    ) -> int:
        me = current_owner()
        with self._write() as db:
            now = time.time()
            running = db.execute(
                "SELECT id, owner_host, owner_pid, owner_start, started_at, updated_at FROM runs"
                " WHERE connection = ? AND status = ?",
                (connection, RUNNING),
            ).fetchall()
            for run_id, host, pid, start, started_at, updated_at in running:
                owner = Owner(host, pid, start)
                if not owner.alive():
                    _abandon(db, run_id, owner, updated_at)
                elif exclusive:
                    raise ConfigError(
                        f"connection {connection!r} is already being synced: run {run_id}, "
                        f"started {_iso(started_at)} by ferry {owner}; wait for it to end "
                        "(two syncs of one connection at once would race on its state)"
                    )
            cursor = db.execute(
                "INSERT INTO runs (connection, status, started_at, updated_at, full_refresh,"
                " runtime, owner_host, owner_pid, owner_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            )
            return _rowid(cursor)

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
            cursor = db.execute(
                "INSERT INTO attempts (run_id, number, status, started_at) VALUES (?, ?, ?, ?)",
                (run_id, number, RUNNING, now),
            )
            db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now, run_id))
            return _rowid(cursor)

    def finish_attempt(
        self,
        attempt_id: int,
        status: str,
        stats: Iterable[StreamCounts] = (),
        error: str | None = None,
        failure_type: str | None = None,
    ) -> None:
        _check_final(status)
        with self._write() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE attempts SET status = ?, ended_at = ?, error = ?, failure_type = ?"
                " WHERE id = ?",
                (status, now, error, failure_type, attempt_id),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"there is no attempt {attempt_id}")
            for counts in stats:
                _set_counts(db, attempt_id, counts)
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
        _check_final(status)
        with self._write() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, updated_at = ?, error = ?,"
                " failure_type = ? WHERE id = ?",
                (status, now, now, error, failure_type, run_id),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"there is no run {run_id}")
            db.execute(
                "UPDATE attempts SET status = ?, ended_at = ? WHERE run_id = ? AND status = ?",
                (status, now, run_id, RUNNING),
            )

    def list_runs(self, connection: str, limit: int = 20) -> list[RunRecord]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE connection = ? ORDER BY id DESC LIMIT ?",
                (connection, limit),
            )
            return _run_records(db, rows.fetchall())


# -- helpers (called inside a transaction) ----------------------------------------------------


def _create_private(path: Path) -> None:
    """Create the parent directories and an empty file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _rowid(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:
        raise InternalError("an INSERT reported no row id")
    return cursor.lastrowid


def _check_final(status: str) -> None:
    if status not in FINAL_STATUSES:
        raise InternalError(
            f"status must be one of {', '.join(sorted(FINAL_STATUSES))}: {status!r}"
        )


def _load_raw(db: sqlite3.Connection, connection: str) -> ConnectionState:
    """The stored state, its values left as `_Json` text."""
    row = db.execute(
        "SELECT type, shared FROM connection_state WHERE connection = ?", (connection,)
    ).fetchone()
    if row is None:
        return EMPTY
    kind, shared = row
    streams = {
        StreamDescriptor(name=name, namespace=namespace): _Json(state)
        for name, namespace, state in db.execute(
            "SELECT name, namespace, state FROM stream_state WHERE connection = ?", (connection,)
        )
    }
    return ConnectionState(
        type=kind,
        streams=streams,
        shared_state=_Json(shared) if kind == STATE_GLOBAL else None,
        data=_Json(shared) if kind == STATE_LEGACY else None,
    )


def _write_state(
    db: sqlite3.Connection,
    connection: str,
    old: ConnectionState,
    new: ConnectionState,
    attempt_id: int | None,
    now: float,
) -> None:
    """Write the rows that differ between `old` (as loaded) and `new`."""
    if new.is_empty:
        db.execute("DELETE FROM stream_state WHERE connection = ?", (connection,))
        db.execute("DELETE FROM connection_state WHERE connection = ?", (connection,))
        return
    shared = new.shared_state if new.type == STATE_GLOBAL else new.data
    db.execute(
        "INSERT INTO connection_state (connection, type, shared, updated_at, attempt_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection) DO UPDATE SET type = excluded.type,"
        " shared = excluded.shared, updated_at = excluded.updated_at,"
        " attempt_id = excluded.attempt_id",
        (connection, new.type, _text(shared), now, attempt_id),
    )
    if old.type != new.type:
        db.execute("DELETE FROM stream_state WHERE connection = ?", (connection,))
        old_streams: dict[StreamDescriptor, Any] = {}
    else:
        old_streams = dict(old.streams)
        for gone in old_streams.keys() - new.streams.keys():
            db.execute(
                "DELETE FROM stream_state WHERE connection = ? AND name = ? AND namespace IS ?",
                (connection, gone.name, gone.namespace),
            )
    for descriptor, value in new.streams.items():
        previous = old_streams.get(descriptor)
        if previous is not None and value is previous:
            continue
        text = _text(value)
        if previous is not None:
            if text == previous.text:
                continue
            db.execute(
                "UPDATE stream_state SET state = ?, updated_at = ?"
                " WHERE connection = ? AND name = ? AND namespace IS ?",
                (text, now, connection, descriptor.name, descriptor.namespace),
            )
        else:
            db.execute(
                "INSERT INTO stream_state (connection, name, namespace, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (connection, descriptor.name, descriptor.namespace, text, now),
            )


def _count_commit(
    db: sqlite3.Connection,
    connection: str,
    attempt_id: int,
    states: Sequence[AirbyteStateMessage],
    now: float,
) -> None:
    cursor = db.execute(
        "UPDATE attempts SET states_committed = states_committed + ?"
        " WHERE id = ? AND run_id IN (SELECT id FROM runs WHERE connection = ?)",
        (len(states), attempt_id, connection),
    )
    if cursor.rowcount != 1:
        raise StoreError(f"attempt {attempt_id} is not an attempt of connection {connection!r}")
    db.execute(
        "UPDATE runs SET updated_at = ? WHERE id = (SELECT run_id FROM attempts WHERE id = ?)",
        (now, attempt_id),
    )
    touched = Counter(d for state in states for d in streams_touched(state))
    for descriptor, count in touched.items():
        cursor = db.execute(
            "UPDATE attempt_streams SET states_committed = states_committed + ?"
            " WHERE attempt_id = ? AND name = ? AND namespace IS ?",
            (count, attempt_id, descriptor.name, descriptor.namespace),
        )
        if cursor.rowcount == 0:
            db.execute(
                "INSERT INTO attempt_streams (attempt_id, name, namespace, states_committed)"
                " VALUES (?, ?, ?, ?)",
                (attempt_id, descriptor.name, descriptor.namespace, count),
            )


def _generations(db: sqlite3.Connection, connection: str) -> dict[StreamDescriptor, int]:
    return {
        StreamDescriptor(name=name, namespace=namespace): generation
        for name, namespace, generation in db.execute(
            "SELECT name, namespace, generation FROM stream_generation WHERE connection = ?",
            (connection,),
        )
    }


def _set_counts(db: sqlite3.Connection, attempt_id: int, counts: StreamCounts) -> None:
    stream = counts.stream
    values = (
        counts.records_sent,
        counts.bytes_sent,
        counts.records_committed,
        counts.bytes_committed,
        counts.records_rejected,
    )
    cursor = db.execute(
        "UPDATE attempt_streams SET records = ?, bytes = ?, records_committed = ?,"
        " bytes_committed = ?, records_rejected = ?"
        " WHERE attempt_id = ? AND name = ? AND namespace IS ?",
        (*values, attempt_id, stream.name, stream.namespace),
    )
    if cursor.rowcount == 0:
        db.execute(
            "INSERT INTO attempt_streams (attempt_id, name, namespace, records, bytes,"
            " records_committed, bytes_committed, records_rejected)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (attempt_id, stream.name, stream.namespace, *values),
        )


def _abandon(db: sqlite3.Connection, run_id: int, owner: Owner, last_activity: float) -> None:
    error = _abandoned_error(owner, last_activity)
    db.execute(
        "UPDATE runs SET status = ?, ended_at = updated_at, error = coalesce(error, ?)"
        " WHERE id = ?",
        (ABANDONED, error, run_id),
    )
    db.execute(
        "UPDATE attempts SET status = ?, ended_at = ?, error = coalesce(error, ?)"
        " WHERE run_id = ? AND status = ?",
        (ABANDONED, last_activity, error, run_id, RUNNING),
    )


_RUN_COLUMNS = (
    "id, connection, status, started_at, ended_at, updated_at, error, failure_type,"
    " full_refresh, runtime, owner_host, owner_pid, owner_start"
)


def _stream_order(totals: StreamTotals) -> tuple[bool, str, str]:
    d = totals.stream
    return (d.namespace is not None, d.namespace or "", d.name)


def _run_records(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[RunRecord]:
    records = []
    liveness: dict[Owner, bool] = {}
    for row in rows:
        (run_id, connection, status, started, ended, updated, error, failure_type) = row[:8]
        full_refresh, runtime, host, pid, start = row[8:]
        owner = Owner(host, pid, start)
        abandoned = False
        if status == RUNNING:
            if owner not in liveness:
                liveness[owner] = owner.alive()
            abandoned = not liveness[owner]
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
                        )
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
        records.append(
            RunRecord(
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
        )
    return records


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
