"""What only the PostgreSQL store does: locks held by a session of their own, lost locks, the
schema in its own table, concurrent first opens. (The shared contract runs in the other
modules of tests/store on both backends.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from ferry.errors import ConnectionBusy, StoreError
from ferry.protocol import convert
from ferry.protocol.messages import AirbyteStateMessage, StreamDescriptor
from ferry.store import RUNNING, SUCCEEDED, open_store
from ferry.store.postgres import POSTGRES_DDL, PostgresStore, connection_key
from ferry.store.schema import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.postgres


def stream_state(value: Any) -> AirbyteStateMessage:
    body = {"type": "STREAM", "stream": {"stream_descriptor": {"name": "a"}, "stream_state": value}}
    return convert(body, AirbyteStateMessage)


def lock_sessions(url: str) -> list[int]:
    """Backend pids of ferry sessions holding advisory locks in this database."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return [pid for (pid,) in rows]


def test_a_run_holds_its_lock_until_it_finishes(postgres_url: str) -> None:
    with open_store(postgres_url) as first, open_store(postgres_url) as second:
        run = first.start_run("c")
        assert len(lock_sessions(postgres_url)) == 1
        with pytest.raises(ConnectionBusy, match=f"run {run}, started .* by ferry pid"):
            second.start_run("c")
        other = second.start_run("d")
        first.finish_run(run, SUCCEEDED)
        second.finish_run(second.start_run("c"), SUCCEEDED)
        second.finish_run(other, SUCCEEDED)
        assert lock_sessions(postgres_url) == []


def test_closing_the_store_releases_its_runs(postgres_url: str) -> None:
    first = open_store(postgres_url)
    run = first.start_run("c")
    first.close()  # as when ferry's process ends: its sessions end, the server drops the locks
    with open_store(postgres_url) as second:
        (record,) = second.list_runs("c")
        assert (record.id, record.status) == (run, "abandoned")
        new = second.start_run("c")
        assert [r.status for r in second.list_runs("c")] == [RUNNING, "abandoned"]
        second.finish_run(new, SUCCEEDED)


def test_a_commit_after_the_lock_session_was_lost_is_refused(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        run = store.start_run("c")
        attempt = store.start_attempt(run)
        store.commit_states("c", attempt, [stream_state(1)])
        (holder,) = lock_sessions(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            # With a timeout, the call returns once the session is gone, its locks with it.
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (holder,))
        with pytest.raises(StoreError, match="lost its lock on connection 'c'"):
            store.commit_states("c", attempt, [stream_state(2)])
        assert store.load_state("c").streams  # the state of the refused commit is not there
        assert next(iter(store.load_state("c").streams.values())) == 1


def connection_locks_of(admin: psycopg.Connection[Any], pid: int) -> set[int]:
    """The one-key (bigint) advisory locks backend `pid` holds: ferry's connection locks."""
    rows = admin.execute(
        "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
        " AND objsubid = 1 AND granted AND pid = %s",
        (pid,),
    ).fetchall()
    return {int.from_bytes(((high << 32) | low).to_bytes(8), signed=True) for high, low in rows}


def test_the_runs_of_one_store_commit_side_by_side_each_on_its_lock_session(
    postgres_url: str,
) -> None:
    """Commits of several runs of one store, from threads (as `ferry sync A.yaml B.yaml ...`
    makes them), wait on the server at the same time, each in the session that holds its
    connection's lock: none queues behind another in ferry."""
    names = ["a", "b", "c", "d"]
    with open_store(postgres_url) as store:
        attempts = {name: store.start_attempt(store.start_run(name)) for name in names}
        commits = [
            threading.Thread(target=store.commit_states, args=(n, attempts[n], [stream_state(n)]))
            for n in names
        ]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            with psycopg.connect(postgres_url) as blocker:  # holds the runs' rows: commits wait
                blocker.execute("SELECT id FROM runs FOR UPDATE")
                for commit in commits:
                    commit.start()
                waiting: list[int] = []
                deadline = time.monotonic() + 30  # a guard against a hang, not a measure
                while len(waiting) < len(names) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    waiting = [
                        pid
                        for (pid,) in admin.execute(
                            "SELECT DISTINCT pid FROM pg_locks WHERE NOT granted"
                        ).fetchall()
                    ]
                held = {pid: connection_locks_of(admin, pid) for pid in waiting}
            for commit in commits:
                commit.join()
        # One waiting session per run, each holding its own connection's lock and no other.
        assert sorted(tuple(locks) for locks in held.values()) == sorted(
            (connection_key(n),) for n in names
        )
        assert {n: store.load_state(n).streams for n in names} == {
            n: {StreamDescriptor(name="a"): n} for n in names
        }


def test_many_first_opens_at_once_migrate_once(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            open_store(postgres_url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(postgres_url) as raw:
        assert raw.execute("SELECT version FROM ferry_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_the_store_names_itself_without_the_password(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        password = postgres_url.split(":")[2].split("@")[0]
        assert password not in store.url
        assert ":***@" in store.url


def test_a_store_of_schema_version_2_gains_the_commit_check(postgres_url: str) -> None:
    """A store written before the server-side commit check keeps its state, and commits (which
    need the check) work once it is opened."""
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        for step in MIGRATIONS[:2]:
            for statement in step:
                raw.execute(POSTGRES_DDL.render(statement))
        raw.execute("CREATE TABLE ferry_schema (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO ferry_schema (version) VALUES (2)")
        raw.execute(
            "INSERT INTO connection_state (connection, type, shared, updated_at)"
            " VALUES ('c', 'STREAM', 'null', 0)"
        )
        raw.execute(
            "INSERT INTO stream_state (connection, name, state, updated_at) VALUES ('c', 'a', '1', 0)"
        )
    with open_store(postgres_url) as store:
        assert next(iter(store.load_state("c").streams.values())) == 1
        run = store.start_run("c")
        store.commit_states("c", store.start_attempt(run), [stream_state(2)])
        store.finish_run(run, SUCCEEDED)
        assert next(iter(store.load_state("c").streams.values())) == 2
    with psycopg.connect(postgres_url) as raw:
        assert raw.execute("SELECT version FROM ferry_schema").fetchall() == [(SCHEMA_VERSION,)]
