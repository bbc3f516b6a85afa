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
- `PRAGMA user_version` holds the schema version.
- A connection is "locked" by its running run: the run records its owner's host, pid and start
  time, and a second run is refused while that process lives (judged on the same host only).

The queries themselves are shared with the PostgreSQL store (`ferry.store.sql`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ferry.errors import StoreError
from ferry.store import schema
from ferry.store.owner import Owner
from ferry.store.schema import SCHEMA_VERSION, DdlTokens
from ferry.store.sql import Db, RunningRun, SqlStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore"]

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's transaction

SQLITE_DDL = DdlTokens(
    id="INTEGER PRIMARY KEY",
    int="INTEGER",
    real="REAL",
    namespace_key="coalesce(namespace, x'00')",  # a blob equals no text
)


# The migrations as SQLite runs them.
MIGRATIONS = tuple(tuple(SQLITE_DDL.render(s) for s in step) for step in schema.MIGRATIONS)


class SqliteStore(SqlStore):
    ddl = SQLITE_DDL

    def __init__(self, path: str | Path, *, url: str | None = None) -> None:
        super().__init__()
        self.path = self.where = str(path)
        self.url = url or f"sqlite://{self.path}"
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
            if self._schema_version(self._db) != SCHEMA_VERSION:
                with self._write() as db:
                    self._migrate(db)
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"cannot open the state store {self.path}: {e}") from None
        except OSError as e:
            self.close()
            raise StoreError(f"cannot create the state store {self.path}: {e}") from None
        except StoreError:
            self.close()
            raise

    # -- plumbing ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the state store {self.path} is closed")
        return self._db

    def _schema_version(self, db: Db) -> int:
        return int(db.execute("PRAGMA user_version").fetchone()[0])

    def _set_schema_version(self, db: Db, version: int) -> None:
        db.execute(f"PRAGMA user_version = {int(version)}")

    @contextmanager
    def _write(self, batched: bool = False) -> Iterator[Db]:
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
    def _read(self) -> Iterator[Db]:
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

    def _alive(self, db: Db, runs: Sequence[RunningRun]) -> set[int]:
        liveness: dict[Owner, bool] = {}
        for run in runs:
            if run.owner not in liveness:
                liveness[run.owner] = run.owner.alive()
        return {run.id for run in runs if liveness[run.owner]}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _create_private(path: Path) -> None:
    """Create the parent directories and an empty file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
