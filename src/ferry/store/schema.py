"""The store's tables, one list of migrations for every SQL backend.

`MIGRATIONS[i]` moves schema version i to i+1. Statements are written once, with `{tokens}` for
the few column types and index keys the dialects spell differently; each backend renders them
with its own `DdlTokens` (SQLite's rendering is byte for byte the schema ferry always had).
A new schema change is a new entry appended here, never an edit of an old one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DdlTokens:
    id: str  # an auto-assigned integer primary key
    int: str  # a 64-bit integer
    real: str  # a double (timestamps are seconds since the epoch)
    namespace_key: str  # index key parts that tell a NULL namespace from every text one
    # The statement creating what checks a state commit on the server (PostgreSQL: a function
    # that raises, so that a commit is sent in one go); empty where there is none.
    commit_check: str = ""

    def render(self, statement: str) -> str:
        return statement.format(status_check=_STATUS_CHECK, **asdict(self))


_STATUS_CHECK = "CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'abandoned'))"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1
    (
        """CREATE TABLE connection_state (
            connection TEXT PRIMARY KEY,
            type TEXT NOT NULL CHECK (type IN ('STREAM', 'GLOBAL', 'LEGACY')),
            shared TEXT NOT NULL,  -- JSON: GLOBAL shared_state, LEGACY data, null for STREAM
            updated_at {real} NOT NULL,
            attempt_id {int}  -- the attempt whose commit last changed it
        )""",
        """CREATE TABLE stream_state (
            connection TEXT NOT NULL
                REFERENCES connection_state (connection) ON DELETE CASCADE,
            name TEXT NOT NULL,
            namespace TEXT,
            state TEXT NOT NULL,  -- JSON
            updated_at {real} NOT NULL
        )""",
        # NULL and '' are different namespaces.
        """CREATE UNIQUE INDEX stream_state_key
            ON stream_state (connection, name, {namespace_key})""",
        """CREATE TABLE runs (
            id {id},
            connection TEXT NOT NULL,
            status TEXT NOT NULL {status_check},
            started_at {real} NOT NULL,
            ended_at {real},
            updated_at {real} NOT NULL,  -- last activity: start, attempts, state commits
            error TEXT,
            failure_type TEXT,
            full_refresh {int} NOT NULL DEFAULT 0,
            runtime TEXT,
            owner_host TEXT NOT NULL,
            owner_pid {int} NOT NULL,
            owner_start TEXT  -- process start time, tells a reused pid apart
        )""",
        "CREATE INDEX runs_by_connection ON runs (connection, id)",
        """CREATE TABLE attempts (
            id {id},
            run_id {int} NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            number {int} NOT NULL,
            status TEXT NOT NULL {status_check},
            started_at {real} NOT NULL,
            ended_at {real},
            error TEXT,
            failure_type TEXT,
            states_committed {int} NOT NULL DEFAULT 0,
            UNIQUE (run_id, number)
        )""",
        """CREATE TABLE attempt_streams (
            attempt_id {int} NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            namespace TEXT,
            records {int} NOT NULL DEFAULT 0,
            bytes {int} NOT NULL DEFAULT 0,
            states_committed {int} NOT NULL DEFAULT 0
        )""",
        """CREATE UNIQUE INDEX attempt_streams_key
            ON attempt_streams (attempt_id, name, {namespace_key})""",
    ),
    # 1 -> 2: records/bytes are those sent to the destination; these, those it committed;
    # generations (refreshes, clears); rejected records; configs sent by connectors in
    # CONTROL messages (rotated OAuth tokens).
    (
        "ALTER TABLE attempt_streams ADD COLUMN records_committed {int} NOT NULL DEFAULT 0",
        "ALTER TABLE attempt_streams ADD COLUMN bytes_committed {int} NOT NULL DEFAULT 0",
        """CREATE TABLE stream_generation (
            connection TEXT NOT NULL,
            name TEXT NOT NULL,
            namespace TEXT,
            generation {int} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        """CREATE UNIQUE INDEX stream_generation_key
            ON stream_generation (connection, name, {namespace_key})""",
        "ALTER TABLE attempt_streams ADD COLUMN records_rejected {int} NOT NULL DEFAULT 0",
        """CREATE TABLE connector_configs (
            connection TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('source', 'destination')),
            config TEXT NOT NULL,  -- JSON
            file_fingerprint TEXT NOT NULL,  -- of the connection file's config it replaced
            updated_at {real} NOT NULL,
            PRIMARY KEY (connection, role)
        )""",
    ),
    # 2 -> 3: the server-side check of a state commit (PostgreSQL only).
    ("{commit_check}",),
)
SCHEMA_VERSION = len(MIGRATIONS)
