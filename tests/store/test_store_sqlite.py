"""The store contract, on SQLite and PostgreSQL (the `store` fixture runs each test on both):
state round trips, resets, runs and attempts, owners; then SQLite's URLs and schema."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.errors import ConfigError, ConnectionBusy, InternalError, ProtocolViolation, StoreError
from ferry.protocol import decode_message
from ferry.protocol.messages import AirbyteStateMessage, StreamDescriptor
from ferry.store import (
    ABANDONED,
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    ConnectionState,
    RunRecord,
    SqliteStore,
    Store,
    StreamCounts,
    apply_states,
    open_store,
)
from ferry.store.owner import Owner, current_owner
from ferry.store.sqlite import MIGRATIONS, SCHEMA_VERSION
from ferry.store.state import EMPTY
from pgkit import wait_for_ferry_sessions

CHILD = Path(__file__).with_name("store_child.py")
A = StreamDescriptor("a")
B = StreamDescriptor("b")


def run_record(store: Store, run_id: int, connection: str = "c") -> RunRecord:
    """The store's record of one run, from its connection's history."""
    (record,) = [r for r in store.list_runs(connection, limit=100) if r.id == run_id]
    return record


def state(body: dict[str, Any]) -> AirbyteStateMessage:
    message = decode_message(orjson.dumps({"type": "STATE", "state": body}))
    assert message.state is not None
    return message.state


def stream(name: str, value: Any, namespace: str | None = None) -> AirbyteStateMessage:
    descriptor: dict[str, Any] = {"name": name}
    if namespace is not None:
        descriptor["namespace"] = namespace
    return state(
        {"type": "STREAM", "stream": {"stream_descriptor": descriptor, "stream_state": value}}
    )


def global_(shared: Any, streams: dict[str, Any]) -> AirbyteStateMessage:
    stream_states = [
        {"stream_descriptor": {"name": n}, "stream_state": v} for n, v in streams.items()
    ]
    return state(
        {"type": "GLOBAL", "global": {"shared_state": shared, "stream_states": stream_states}}
    )


def legacy(data: Any) -> AirbyteStateMessage:
    return state({"type": "LEGACY", "data": data})


def raw_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the store's database itself, behind ferry's back."""
    if url.startswith("postgresql:"):
        import psycopg

        with psycopg.connect(url) as raw:
            return raw.execute(sql).fetchall()
    with sqlite3.connect(url.removeprefix("sqlite://")) as raw:
        return raw.execute(sql).fetchall()


# -- state ---------------------------------------------------------------------------------


def test_a_new_connection_has_empty_state(store: Store) -> None:
    assert store.load_state("nothing") == EMPTY


@pytest.mark.parametrize(
    "messages",
    [
        [stream("a", {"c": 1}), stream("b", {"c": 2}, "ns"), stream("a", {"c": 3})],
        [global_({"lsn": 5}, {"a": {"c": 1}, "b": None})],
        [legacy({"cursor": "2024-01-01"})],
        [stream("a", 1), legacy({"x": 1}), global_({"lsn": 1}, {"b": 2})],
    ],
    ids=["stream", "global", "legacy", "switches"],
)
def test_committed_state_loads_back_as_merged(
    store: Store, messages: list[AirbyteStateMessage]
) -> None:
    store.commit_states("c", None, messages)
    assert store.load_state("c") == apply_states(EMPTY, messages)
    assert store.load_state("other") == EMPTY


AWKWARD = "it's a \\ '' %s %% ? ; $$ -- /* E'x' \n\t ünï 😀"


def test_names_and_values_with_quotes_and_placeholders_round_trip(store: Store) -> None:
    """What a connector puts in a state (and a user in a name) is data, however it is sent to
    the server: quotes, backslashes, placeholders, statement separators."""
    connection = f"conn {AWKWARD}"
    attempt = store.start_attempt(store.start_run(connection))
    messages = [
        stream(f"s {AWKWARD}", {"cursor": AWKWARD, AWKWARD: [AWKWARD]}, f"ns {AWKWARD}"),
        stream("plain", AWKWARD),
    ]
    store.commit_states(connection, attempt, messages)
    assert store.load_state(connection) == apply_states(EMPTY, messages)
    (run,) = store.list_runs(connection)
    assert run.attempts[0].states_committed == 2


def test_state_survives_reopening(store_url: str) -> None:
    with open_store(store_url) as first:
        first.commit_states("c", None, [stream("a", {"c": 1}), stream("a", {"c": 2})])
    with open_store(store_url) as second:
        file = second.load_state("c").state_file()
    assert file is not None
    assert orjson.loads(file) == [
        {"type": "STREAM", "stream": {"stream_descriptor": {"name": "a"}, "stream_state": {"c": 2}}}
    ]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_names = st.sampled_from(["a", "b", "c"])
_namespaces = st.sampled_from([None, "", "ns"])
_messages = st.one_of(
    st.builds(stream, _names, _json, _namespaces),
    st.builds(global_, _json, st.dictionaries(_names, _json, max_size=3)),
    st.builds(legacy, st.dictionaries(st.text(max_size=3), _json, max_size=3)),
)
_counter = itertools.count()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(_messages, min_size=1, max_size=5), min_size=1, max_size=5))
def test_sqlite_commits_agree_with_the_pure_merge(
    store: Store, batches: list[list[AirbyteStateMessage]]
) -> None:
    connection = f"c{next(_counter)}"
    expected = EMPTY
    for batch in batches:
        store.commit_states(connection, None, batch)
        expected = apply_states(expected, batch)
        assert store.load_state(connection) == expected


def test_values_that_python_thinks_equal_are_still_written(store: Store) -> None:
    store.commit_states("c", None, [stream("a", {"v": 1})])
    store.commit_states("c", None, [stream("a", {"v": True})])
    store.commit_states("c", None, [stream("a", {"v": 1.0})])
    assert store.load_state("c").streams[A] == {"v": 1.0}
    assert isinstance(store.load_state("c").streams[A]["v"], float)


def test_a_bad_message_in_a_batch_applies_nothing(store: Store) -> None:
    run = store.start_run("c")
    attempt = store.start_attempt(run)
    store.commit_states("c", attempt, [stream("a", 1)])
    with pytest.raises(ProtocolViolation):
        store.commit_states(
            "c", attempt, [stream("a", 2), stream("b", 2), state({"type": "STREAM"})]
        )
    assert dict(store.load_state("c").streams) == {A: 1}
    record = run_record(store, run)
    assert record.attempts[0].states_committed == 1


def test_commit_with_an_attempt_of_another_connection_applies_nothing(store: Store) -> None:
    attempt = store.start_attempt(store.start_run("other"))
    with pytest.raises(StoreError, match="not an attempt of connection 'c'"):
        store.commit_states("c", attempt, [stream("a", 1)])
    with pytest.raises(StoreError):
        store.commit_states("c", 999, [stream("a", 1)])
    assert store.load_state("c") == EMPTY


def test_reset_one_stream_and_the_whole_connection(store: Store) -> None:
    store.commit_states("c", None, [stream("a", 1), stream("b", 2), stream("a", 3, "ns")])
    store.commit_states("d", None, [stream("a", 9)])
    assert store.reset_state("c", A) is True
    assert dict(store.load_state("c").streams) == {B: 2, StreamDescriptor("a", "ns"): 3}
    assert store.reset_state("c", A) is False
    assert store.reset_state("c", StreamDescriptor("zzz")) is False
    assert store.reset_state("c") is True
    assert store.load_state("c") == EMPTY
    assert store.reset_state("c") is False
    assert dict(store.load_state("d").streams) == {A: 9}, "other connections are untouched"


def test_reset_the_last_stream_empties_the_state(store: Store) -> None:
    store.commit_states("c", None, [stream("a", 1)])
    assert store.reset_state("c", A)
    assert store.load_state("c").is_empty
    store.commit_states("c", None, [legacy({"x": 1})])
    assert store.load_state("c").data == {"x": 1}


def test_reset_one_stream_of_global_state_keeps_the_shared_state(store: Store) -> None:
    store.commit_states("c", None, [global_({"lsn": 7}, {"a": 1, "b": 2})])
    assert store.reset_state("c", A)
    loaded = store.load_state("c")
    assert loaded == ConnectionState(type="GLOBAL", streams={B: 2}, shared_state={"lsn": 7})


def test_reset_one_stream_of_legacy_state_is_refused(store: Store) -> None:
    store.commit_states("c", None, [legacy({"x": 1})])
    with pytest.raises(ConfigError, match="LEGACY"):
        store.reset_state("c", A)
    assert store.load_state("c").data == {"x": 1}


# -- runs ----------------------------------------------------------------------------------


def test_a_run_with_a_retry_lists_with_counts_and_totals(store: Store) -> None:
    run = store.start_run("c", full_refresh=True, runtime="local")
    first = store.start_attempt(run)
    store.commit_states(
        "c",
        first,
        [stream("a", 1), stream("b", 1)],
        progress=[StreamCounts(A, records_sent=10, bytes_sent=1000)],
    )
    store.finish_attempt(
        first,
        FAILED,
        [StreamCounts(A, 12, 1200, 10, 1000), StreamCounts(B, 5, 500)],
        error="boom",
        failure_type="transient_error",
    )
    second = store.start_attempt(run)
    store.commit_states("c", second, [global_(None, {"a": 2, "b": 2})])
    store.commit_states("c", second, [stream("a", 3)])
    store.finish_attempt(second, SUCCEEDED, [StreamCounts(A, 3, 300)])
    store.finish_run(run, SUCCEEDED)

    (record,) = store.list_runs("c")
    assert record.id == run
    assert record.status == SUCCEEDED
    assert record.full_refresh
    assert record.runtime == "local"
    assert record.ended_at is not None
    assert record.duration is not None
    assert record.duration >= 0
    assert record.attempt_count == 2
    one, two = record.attempts
    assert (one.number, one.status, one.error, one.failure_type) == (
        1,
        FAILED,
        "boom",
        "transient_error",
    )
    assert one.states_committed == 2
    assert two.states_committed == 2
    assert [(s.stream, s.records_sent, s.bytes_sent, s.states_committed) for s in one.streams] == [
        (A, 12, 1200, 1),
        (B, 5, 500, 1),
    ]
    assert [(s.stream, s.records_sent, s.bytes_sent, s.states_committed) for s in two.streams] == [
        (A, 3, 300, 2),
        (B, 0, 0, 1),
    ]
    assert [
        (s.stream, s.records_sent, s.bytes_sent, s.states_committed) for s in record.streams
    ] == [
        (A, 15, 1500, 3),
        (B, 5, 500, 2),
    ]
    assert (record.records_sent, record.bytes_sent, record.states_committed) == (20, 2000, 4)
    assert (record.records_committed, record.bytes_committed) == (10, 1000)
    assert run_record(store, run) == record


def test_progress_counts_are_kept_before_the_attempt_ends(store: Store) -> None:
    run = store.start_run("c")
    attempt = store.start_attempt(run)
    store.commit_states("c", attempt, [stream("a", 1)], progress=[StreamCounts(A, 7, 70)])
    store.commit_states("c", attempt, [], progress=[StreamCounts(A, 9, 90)])
    record = run_record(store, run)
    assert record.status == RUNNING
    assert record.ended_at is None
    assert record.duration is None
    assert [(s.records_sent, s.bytes_sent, s.states_committed) for s in record.streams] == [
        (9, 90, 1)
    ]


def test_runs_list_newest_first_with_a_limit(store: Store) -> None:
    ids = []
    for status in (SUCCEEDED, FAILED, CANCELLED):
        run = store.start_run("c")
        store.finish_run(run, status, error=None if status == SUCCEEDED else f"{status}!")
        ids.append(run)
    store.finish_run(store.start_run("other"), SUCCEEDED)
    runs = store.list_runs("c")
    assert [r.id for r in runs] == ids[::-1]
    assert [r.status for r in runs] == [CANCELLED, FAILED, SUCCEEDED]
    assert [r.error for r in runs] == ["cancelled!", "failed!", None]
    assert [r.id for r in store.list_runs("c", limit=2)] == ids[:0:-1]
    assert store.list_runs("nothing") == []


def test_finishing_a_run_ends_its_running_attempts(store: Store) -> None:
    run = store.start_run("c")
    attempt = store.start_attempt(run)
    store.finish_run(run, CANCELLED, error="interrupted")
    record = run_record(store, run)
    assert record.attempts[0].id == attempt
    assert record.attempts[0].status == CANCELLED
    assert record.attempts[0].ended_at is not None
    with pytest.raises(StoreError, match="cancelled"):
        store.start_attempt(run)


def test_run_and_attempt_misuse(store: Store) -> None:
    run = store.start_run("c")
    with pytest.raises(InternalError, match="status"):
        store.finish_run(run, RUNNING)
    with pytest.raises(InternalError, match="status"):
        store.finish_attempt(store.start_attempt(run), "great")
    with pytest.raises(StoreError, match="there is no run 999"):
        store.finish_run(999, SUCCEEDED)
    with pytest.raises(StoreError, match="there is no attempt 999"):
        store.finish_attempt(999, SUCCEEDED)
    with pytest.raises(StoreError):
        store.start_attempt(999)


def test_a_second_run_of_a_connection_while_one_runs_is_refused(store: Store) -> None:
    store.ensure_free("c")
    first = store.start_run("c")
    with pytest.raises(ConfigError, match="already being synced"):
        store.start_run("c")
    with pytest.raises(ConnectionBusy, match=f"run {first}, started"):
        store.ensure_free("c")
    store.start_run("d")  # other connections are free
    second = store.start_run("c", exclusive=False)
    store.finish_run(first, SUCCEEDED)
    store.finish_run(second, SUCCEEDED)
    store.finish_run(store.start_run("c"), SUCCEEDED)


def _hold_run(
    url: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int, int]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), url, "--connection", "c", "--hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert child.stdout is not None
    header = child.stdout.readline().split()
    return child, int(header[1]), int(header[3])


def test_a_run_whose_process_died_is_abandoned(store_url: str) -> None:
    child, run_id, attempt_id = _hold_run(store_url)
    with open_store(store_url) as store:
        (record,) = store.list_runs("c")
        assert record.status == RUNNING
        assert record.owner == f"pid {child.pid} on {current_owner().host}"
        with pytest.raises(ConfigError, match=f"pid {child.pid}"):
            store.start_run("c")

        child.kill()
        child.wait()
        assert child.stdout is not None
        assert child.stdin is not None
        child.stdout.close()
        child.stdin.close()
        wait_for_ferry_sessions(store_url, remaining=1)  # this test's store's
        (record,) = store.list_runs("c")
        assert record.status == ABANDONED
        assert record.ended_at is not None
        assert record.error is not None
        assert f"pid {child.pid}" in record.error
        assert record.attempts[0].status == ABANDONED

        new_run = store.start_run("c")  # marks the dead run abandoned for good
        rows = raw_rows(store_url, "SELECT id, status FROM runs ORDER BY id")
        attempts = raw_rows(store_url, "SELECT id, status FROM attempts")
        assert rows == [(run_id, ABANDONED), (new_run, RUNNING)]
        assert attempts == [(attempt_id, ABANDONED)]


def test_owner_liveness() -> None:
    me = current_owner()
    assert me.pid == os.getpid()
    assert me.alive()
    assert not Owner(me.host, me.pid, "not-my-start-time").alive(), "a reused pid is not the owner"
    assert Owner("some-other-host", 1, None).alive(), "other hosts cannot be judged: assumed alive"

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert not Owner(me.host, child.pid, None).alive()
    child.wait()
    assert not Owner(me.host, child.pid, None).alive()


# -- opening -------------------------------------------------------------------------------


def test_default_store_lives_in_ferry_home(
    ferry_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = ferry_home / "nested" / "home"
    monkeypatch.setenv("FERRY_HOME", str(home))
    with open_store(None) as store:
        assert store.url == f"sqlite://{home}/ferry.db"
        store.commit_states("c", None, [stream("a", 1)])
    assert (home / "ferry.db").is_file()
    assert (home / "ferry.db").stat().st_mode & 0o777 == 0o600


def test_ferry_home_defaults_to_dot_ferry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FERRY_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    with open_store(None) as store:
        assert store.url == f"sqlite://{tmp_path}/.ferry/ferry.db"
    assert (tmp_path / ".ferry" / "ferry.db").is_file()


@pytest.mark.parametrize("form", ["sqlite:///{}", "sqlite:////{}", "{}"])
def test_sqlite_urls_and_plain_paths(tmp_path: Path, form: str) -> None:
    path = tmp_path / "sub" / "x.db"
    with open_store(form.format(str(path).lstrip("/") if "sqlite" in form else path)) as store:
        assert isinstance(store, SqliteStore)
        assert store.path == str(path)
        store.commit_states("c", None, [stream("a", 1)])
    assert path.is_file()


def test_a_relative_plain_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("rel/x.db") as store:
        assert isinstance(store, SqliteStore)
        assert store.path == str(tmp_path / "rel" / "x.db")


def test_an_in_memory_store() -> None:
    for url in (":memory:", "sqlite://:memory:"):
        with open_store(url) as store:
            store.commit_states("c", None, [stream("a", 1)])
            assert dict(store.load_state("c").streams) == {A: 1}


def test_an_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    for url in ("postgres://me:hunter2@127.0.0.1:1/ferry", "postgresql://me:hunter2@127.0.0.1:1/f"):
        with pytest.raises(StoreError, match="cannot connect to the state store") as caught:
            open_store(url)
        assert "hunter2" not in str(caught.value)
        assert "me:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://db/ferry", "unsupported store URL scheme 'mysql'"),
        ("sqlite://relative.db", "names no absolute file"),
        ("sqlite://", "names no absolute file"),
        ("  ", "empty"),
    ],
)
def test_bad_store_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(url)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(StoreError, match="cannot open the state store"):
        open_store(str(path))


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)):
        open_store(str(tmp_path))


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "ferry.db"
    open_store(str(path)).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    open_store(str(path)).close()  # reopening an up-to-date store migrates nothing


def test_a_store_from_a_newer_ferry_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    if store_url.startswith("postgresql:"):
        raw_rows(store_url, f"UPDATE ferry_schema SET version = {SCHEMA_VERSION + 1} RETURNING 1")
    else:
        raw_rows(store_url, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(
        StoreError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer"
    ):
        open_store(store_url)


def test_a_closed_store_refuses_calls(store_url: str) -> None:
    store = open_store(store_url)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load_state("c")


def test_the_store_can_be_called_from_another_thread(store: Store) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.commit_states("c", None, [stream("a", 1)])
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []
    assert dict(store.load_state("c").streams) == {A: 1}


def test_generations_are_bumped_per_connection_and_stream(store: Store) -> None:
    namespaced = StreamDescriptor("a", "ns")
    assert store.generations("c") == {}
    assert store.bump_generations("c", [A, namespaced]) == {A: 1, namespaced: 1}
    assert store.bump_generations("c", [A]) == {A: 2}
    assert store.bump_generations("other", [A]) == {A: 1}
    assert store.generations("c") == {A: 2, namespaced: 1}
    assert store.bump_generations("c", []) == {}


def test_rejected_counts_are_kept_per_stream(store: Store) -> None:
    run = store.start_run("c")
    attempt = store.start_attempt(run)
    store.finish_attempt(attempt, SUCCEEDED, [StreamCounts(A, 10, 100, records_rejected=3)])
    store.finish_run(run, SUCCEEDED)
    record = run_record(store, run)
    assert [(s.records_sent, s.records_rejected) for s in record.streams] == [(10, 3)]
    assert record.records_rejected == 3


def test_a_store_of_schema_version_1_is_migrated(tmp_path: Path) -> None:
    """A store written before generations existed keeps its state and gains them."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statement in MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
    with SqliteStore(path) as store:
        store.commit_states("c", None, [stream("a", 1)])
        assert store.bump_generations("c", [A]) == {A: 1}
        assert store.load_state("c").streams == {A: 1}
