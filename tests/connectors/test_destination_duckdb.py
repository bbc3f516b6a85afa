"""destination-duckdb, run as a real process against real DuckDB files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
from connector_helpers import (
    DATA,
    Result,
    command,
    configured_catalog,
    faker_catalog,
    module_command,
    run,
)

from ferry_connectors.destination_duckdb import column_type, plan_columns

DUCK = command("destination-duckdb")
WriteJson = Callable[[str, Any], Path]
EMITTED = 1_700_000_000_123


def stream(name: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "json_schema": {"type": "object", "properties": properties},
        "supported_sync_modes": ["full_refresh", "incremental"],
        **extra,
    }


USERS = stream(
    "users",
    {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "updated_at": {"type": "string", "format": "date-time"},
    },
    source_defined_primary_key=[["id"]],
    default_cursor_field=["updated_at"],
)


def rec(stream_name: str, data: dict[str, Any], namespace: str | None = None) -> bytes:
    record: dict[str, Any] = {"stream": stream_name, "data": data, "emitted_at": EMITTED}
    if namespace:
        record["namespace"] = namespace
    return json.dumps({"type": "RECORD", "record": record}).encode() + b"\n"


def state(name: str, value: Any) -> bytes:
    message = {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": name}, "stream_state": {"v": value}},
        },
    }
    return json.dumps(message).encode() + b"\n"


def user(i: int, updated: str = "2024-01-01T00:00:00Z", name: str | None = None) -> bytes:
    return rec("users", {"id": i, "name": name or f"user {i}", "updated_at": updated})


class Duck:
    """One DuckDB file and the destination writing into it."""

    def __init__(self, tmp_path: Path, write_json: WriteJson) -> None:
        self.path = tmp_path / "sub" / "out.duckdb"
        self.write_json = write_json
        self.config = write_json("duck.json", {"path": str(self.path)})

    def catalog_file(self, catalog: dict[str, Any]) -> Path:
        return self.write_json("catalog.json", catalog)

    def argv(self, catalog: dict[str, Any]) -> list[str]:
        return [
            *DUCK,
            "write",
            "--config",
            str(self.config),
            "--catalog",
            str(self.catalog_file(catalog)),
        ]

    def write(self, catalog: dict[str, Any], data: bytes) -> Result:
        return run(self.argv(catalog), stdin=data)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql).fetchall()

    def columns(self, table: str) -> dict[str, str]:
        rows = self.query(f"DESCRIBE {table}")
        return {str(r[0]): str(r[1]) for r in rows}


@pytest.fixture
def duck(tmp_path: Path, write_json: WriteJson) -> Duck:
    return Duck(tmp_path, write_json)


# ------------------------------------------------------------------------------------------------
# spec / check
# ------------------------------------------------------------------------------------------------


def test_spec() -> None:
    for argv in (DUCK, module_command("destination-duckdb")):
        result = run([*argv, "spec"])
        assert result.returncode == 0
        spec = result.messages[0]["spec"]
        jsonschema.Draft7Validator.check_schema(spec["connectionSpecification"])
        assert spec["connectionSpecification"]["required"] == ["path"]
        assert set(spec["supported_destination_sync_modes"]) == {
            "overwrite",
            "append",
            "append_dedup",
        }


def test_check_creates_the_database(tmp_path: Path, write_json: WriteJson) -> None:
    path = tmp_path / "new" / "db.duckdb"
    result = run([*DUCK, "check", "--config", str(write_json("c.json", {"path": str(path)}))])
    assert (result.returncode, result.status()["status"]) == (0, "SUCCEEDED")
    assert path.exists()
    with duckdb.connect(str(path), read_only=True) as con:  # the probe table is gone
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)


def test_check_fails_clearly(tmp_path: Path, write_json: WriteJson) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = {
        "parent is a file": {"path": str(a_file / "db.duckdb")},
        "not a database": {"path": str(a_file)},
        "no path": {},
    }
    for name, config in cases.items():
        result = run([*DUCK, "check", "--config", str(write_json("c.json", config))])
        assert result.returncode == 0, name
        status = result.status()
        assert status["status"] == "FAILED", name
        assert status["message"], name


def test_check_fails_when_another_process_holds_the_database(
    tmp_path: Path, write_json: WriteJson
) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"ok\n"
        result = run([*DUCK, "check", "--config", str(write_json("c.json", {"path": str(path)}))])
        assert result.status()["status"] == "FAILED"
        assert "lock" in result.status()["message"].lower()
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------------
# tables and types
# ------------------------------------------------------------------------------------------------


def test_column_types_from_json_schema() -> None:
    assert column_type({"type": "integer"}) == "BIGINT"
    assert column_type({"type": ["null", "integer"]}) == "BIGINT"
    assert column_type({"type": "number"}) == "DOUBLE"
    assert column_type({"type": "number", "airbyte_type": "integer"}) == "BIGINT"
    assert column_type({"type": "string"}) == "VARCHAR"
    assert column_type({"type": ["string", "null"], "format": "date-time"}) == "TIMESTAMPTZ"
    assert (
        column_type(
            {"type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"}
        )
        == "TIMESTAMP"
    )
    assert column_type({"type": "string", "format": "date"}) == "DATE"
    assert column_type({"type": "boolean"}) == "BOOLEAN"
    assert column_type({"type": "object", "properties": {}}) == "JSON"
    assert column_type({"type": "array"}) == "JSON"
    assert column_type({"type": ["string", "integer"]}) == "JSON"
    assert column_type({"anyOf": [{"type": "string"}]}) == "JSON"
    assert column_type({}) == "JSON"
    assert column_type(True) == "JSON"


def test_column_names_stay_unique_for_duckdb() -> None:
    columns = plan_columns(
        {"properties": {"Id": {}, "id": {}, "_ferry_raw_id": {}, "ID_1": {}, "x": {}}}
    )
    names = [c.name.lower() for c in columns]
    assert len(set(names)) == len(names)
    assert [c.field for c in columns] == ["Id", "id", "_ferry_raw_id", "ID_1", "x"]
    assert "_ferry_raw_id" not in names
    assert [c.name for c in plan_columns({"type": "object"})] == ["_ferry_data"]


TYPED = stream(
    "typed",
    {
        "i": {"type": ["null", "integer"]},
        "n": {"type": "number"},
        "s": {"type": "string"},
        "b": {"type": "boolean"},
        "ts": {"type": "string", "format": "date-time"},
        "naive": {
            "type": "string",
            "format": "date-time",
            "airbyte_type": "timestamp_without_timezone",
        },
        "d": {"type": "string", "format": "date"},
        "o": {"type": "object", "properties": {"k": {"type": "string"}}},
        "a": {"type": "array", "items": {"type": "integer"}},
        "u": {"type": ["string", "integer"]},
        'weird "name" ~/': {"type": "string"},
    },
)


def test_typed_table_with_metadata(duck: Duck) -> None:
    data = {
        "i": 42,
        "n": 1.5,
        "s": "text",
        "b": True,
        "ts": "2024-04-08T18:07:20+02:00",
        "naive": "2024-04-08T18:07:20",
        "d": "2024-04-08",
        "o": {"k": "v", "extra": [1, 2]},
        "a": [1, 2, 3],
        "u": 7,
        'weird "name" ~/': "w",
        "undeclared": "dropped",
    }
    result = duck.write(configured_catalog([TYPED]), rec("typed", data) + rec("typed", {}))
    assert result.returncode == 0, result.stderr
    assert duck.columns("typed") == {
        "i": "BIGINT",
        "n": "DOUBLE",
        "s": "VARCHAR",
        "b": "BOOLEAN",
        "ts": "TIMESTAMP WITH TIME ZONE",
        "naive": "TIMESTAMP",
        "d": "DATE",
        "o": "JSON",
        "a": "JSON",
        "u": "JSON",
        'weird "name" ~/': "VARCHAR",
        "_ferry_raw_id": "UUID",
        "_ferry_extracted_at": "TIMESTAMP WITH TIME ZONE",
        "_ferry_meta": "JSON",
        "_ferry_generation_id": "BIGINT",
    }
    rows = duck.query(
        'SELECT i, n, s, b, ts, naive, d, o, a, u, "weird ""name"" ~/", _ferry_extracted_at,'
        " _ferry_meta FROM typed ORDER BY i NULLS LAST"
    )
    assert rows[0] == (
        42,
        1.5,
        "text",
        True,
        datetime(2024, 4, 8, 16, 7, 20, tzinfo=UTC),
        datetime(2024, 4, 8, 18, 7, 20),
        date(2024, 4, 8),
        '{"k":"v","extra":[1,2]}',
        "[1,2,3]",
        "7",
        "w",
        datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        None,
    )
    assert rows[1][:11] == (None,) * 11  # an empty record: all NULL, no crash
    ids = duck.query("SELECT count(DISTINCT _ferry_raw_id), count(_ferry_raw_id) FROM typed")
    assert ids == [(2, 2)]


def test_values_that_do_not_fit_become_null_and_are_listed(duck: Duck) -> None:
    bad = {
        "i": 12.5,
        "n": "not a number",
        "s": {"an": "object"},
        "b": "maybe",
        "ts": "yesterday",
        "d": "2024-13-45",
        "o": None,
    }
    good_after = {"i": "17", "n": 3, "b": False}
    result = duck.write(configured_catalog([TYPED]), rec("typed", bad) + rec("typed", good_after))
    assert result.returncode == 0
    rows = duck.query("SELECT i, n, s, b, ts, d, o, _ferry_meta FROM typed ORDER BY i NULLS FIRST")
    first, second = rows
    assert first[:7] == (None, None, '{"an":"object"}', None, None, None, None)
    changes = json.loads(first[7])["changes"]
    assert sorted(c["field"] for c in changes) == ["b", "d", "i", "n", "ts"]
    assert {c["change"] for c in changes} == {"NULLED"}
    assert second[:4] == (17, 3.0, None, False)
    assert second[7] is None
    warnings = [m["log"]["message"] for m in result.of_type("LOG") if m["log"]["level"] == "WARN"]
    assert any("1 rows" in w for w in warnings)


def test_source_faker_catalog_and_records(duck: Duck) -> None:
    catalog = configured_catalog(faker_catalog()["streams"], "append_dedup")
    data = (DATA / "source_faker_read.jsonl").read_bytes()
    result = duck.write(catalog, data)
    assert result.returncode == 0, result.stderr
    source_states = [json.loads(line)["state"] for line in data.splitlines() if b'"STATE"' in line]
    echoed = result.states
    assert [s["stream"] for s in echoed] == [s["stream"] for s in source_states]
    assert [s["destinationStats"]["recordCount"] for s in echoed] == [
        s["sourceStats"]["recordCount"] for s in source_states
    ]
    users = duck.columns("users")
    assert users["id"] == "BIGINT"
    assert users["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert users["address"] == "JSON"
    assert duck.columns("products")["price"] == "DOUBLE"
    assert duck.columns("purchases")["returned_at"] == "TIMESTAMP WITH TIME ZONE"
    expected: dict[str, set[Any]] = {}
    for line in data.splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            expected.setdefault(message["record"]["stream"], set()).add(
                message["record"]["data"]["id"]
            )
    for table, ids in expected.items():
        assert duck.query(f"SELECT count(*), count(DISTINCT id) FROM {table}") == [
            (len(ids), len(ids))
        ]
        assert duck.query(f"SELECT count(*) FROM {table} WHERE _ferry_meta IS NOT NULL") == [(0,)]
    city = duck.query("SELECT address->>'city' FROM users WHERE address IS NOT NULL LIMIT 1")
    assert city[0][0]


# ------------------------------------------------------------------------------------------------
# sync modes
# ------------------------------------------------------------------------------------------------


def test_append_appends(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "append")
    for _ in range(2):
        result = duck.write(catalog, user(1) + user(2) + state("users", 1) + user(3))
        assert result.returncode == 0
    assert duck.query("SELECT id, count(*) FROM users GROUP BY id ORDER BY id") == [
        (1, 2),
        (2, 2),
        (3, 2),
    ]


def test_overwrite_replaces(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "overwrite", sync_mode="full_refresh")
    duck.write(catalog, user(1) + user(2) + state("users", 1))
    result = duck.write(catalog, user(7) + state("users", 1) + user(8))
    assert result.returncode == 0
    assert duck.query("SELECT id FROM users ORDER BY id") == [(7,), (8,)]


def test_overwrite_keeps_old_rows_when_the_sync_fails_before_its_first_state(
    duck: Duck,
) -> None:
    catalog = configured_catalog([USERS], "overwrite", sync_mode="full_refresh")
    duck.write(catalog, user(1) + user(2) + state("users", 1))
    failed = duck.write(catalog, user(7) + rec("nope", {}))
    assert failed.returncode != 0
    assert duck.query("SELECT id FROM users ORDER BY id") == [(1,), (2,)]


def test_overwrite_of_a_stream_without_records_empties_it_at_the_end(duck: Duck) -> None:
    other = stream("other", {"id": {"type": "integer"}})
    catalog = configured_catalog([USERS, other], "overwrite", sync_mode="full_refresh")
    duck.write(catalog, user(1) + rec("other", {"id": 1}) + state("users", 1))
    duck.write(catalog, rec("other", {"id": 2}) + state("other", 1))
    assert duck.query("SELECT count(*) FROM users") == [(0,)]
    assert duck.query("SELECT id FROM other") == [(2,)]


def test_overwrite_picks_up_a_changed_schema(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "overwrite", sync_mode="full_refresh")
    duck.write(catalog, user(1))
    changed = stream("users", {"id": {"type": "string"}, "extra": {"type": "boolean"}})
    duck.write(configured_catalog([changed], "overwrite"), rec("users", {"id": "a", "extra": True}))
    assert duck.columns("users")["id"] == "VARCHAR"
    assert duck.query("SELECT id, extra FROM users") == [("a", True)]


def test_overwrite_with_a_generation_keeps_rows_of_the_same_generation(duck: Duck) -> None:
    def catalog(generation: int) -> dict[str, Any]:
        return configured_catalog(
            [USERS], "overwrite", sync_mode="full_refresh", generation_id=generation
        )

    complete = status("users", "COMPLETE")
    duck.write(catalog(1), user(1) + state("users", 1) + complete)
    duck.write(catalog(2), user(2) + state("users", 1) + complete)  # attempt 1 of generation 2
    duck.write(catalog(2), user(3) + state("users", 2) + complete)  # attempt 2 resumes it
    assert duck.query("SELECT id, _ferry_generation_id FROM users ORDER BY id") == [
        (2, 2),
        (3, 2),
    ]


def test_overwrite_with_generations_replaces_only_on_complete(duck: Duck) -> None:
    """The platform's contract (and ferry's): after a failed source, EOF without COMPLETE and
    without any other status; the table must stay as it was."""
    catalog = configured_catalog(
        [USERS], "overwrite", sync_mode="full_refresh", generation_id=1, minimum_generation_id=1
    )
    first = duck.write(catalog, user(1) + state("users", 1) + status("users", "COMPLETE"))
    assert first.returncode == 0, first.stderr
    before = users_rows(duck)
    catalog["streams"][0].update(generation_id=2, minimum_generation_id=2)
    result = duck.write(catalog, user(7) + state("users", 1) + user(8))
    assert result.returncode == 0, result.stderr
    assert len(result.states) == 1
    assert users_rows(duck) == before
    assert table_names(duck) == ["users"]
    assert "the input ended before the stream was COMPLETE" in warnings(result)[0]


def test_append_adds_missing_columns_and_keeps_existing_types(duck: Duck) -> None:
    duck.write(configured_catalog([USERS], "append"), user(1))
    wider = stream(
        "users",
        {
            "id": {"type": "string"},  # was BIGINT: values are cast to BIGINT
            "name": {"type": "string"},
            "updated_at": {"type": "string"},
            "age": {"type": "integer"},
        },
    )
    result = duck.write(configured_catalog([wider], "append"), rec("users", {"id": "2", "age": 30}))
    assert result.returncode == 0
    assert duck.columns("users")["id"] == "BIGINT"
    assert duck.query("SELECT id, age FROM users ORDER BY id") == [(1, None), (2, 30)]
    assert any("BIGINT" in m["log"]["message"] for m in result.of_type("LOG"))


def test_append_dedup_latest_cursor_wins_ties_by_arrival(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "append_dedup")
    first = (
        user(1, "2024-01-02T00:00:00Z", "new")
        + user(1, "2024-01-01T00:00:00Z", "older, arrived later")
        + user(2, "2024-01-01T00:00:00Z", "tie a")
        + user(2, "2024-01-01T00:00:00Z", "tie b")
        + state("users", 1)
        + user(3, "2024-01-01T00:00:00Z", "three")
    )
    result = duck.write(catalog, first)
    assert result.returncode == 0
    assert duck.query("SELECT id, name FROM users ORDER BY id") == [
        (1, "new"),
        (2, "tie b"),
        (3, "three"),
    ]
    second = (
        user(1, "2023-12-31T00:00:00Z", "stale")  # older than what the table has: loses
        + user(2, "2024-01-01T00:00:00Z", "tie c")  # same cursor, arrives later: wins
        + state("users", 2)
        + user(3, "2024-02-01T00:00:00Z", "three again")
        + rec("users", {"id": 3, "name": "null cursor", "updated_at": None})
    )
    duck.write(catalog, second)
    assert duck.query("SELECT id, name FROM users ORDER BY id") == [
        (1, "new"),
        (2, "tie c"),
        (3, "three again"),
    ]


def test_append_dedup_with_a_composite_and_nested_key(duck: Duck) -> None:
    events = stream(
        "events",
        {
            "ref": {"type": "object"},
            "kind": {"type": "string"},
            "seq": {"type": "integer"},
        },
    )
    catalog = configured_catalog(
        [events], "append_dedup", primary_key=[["ref", "id"], ["kind"]], cursor_field=["seq"]
    )

    def event(ref: int, kind: str, seq: int) -> bytes:
        return rec("events", {"ref": {"id": ref}, "kind": kind, "seq": seq})

    data = event(1, "a", 1) + event(1, "b", 1) + event(1, "a", 3) + state("events", 1)
    data += event(1, "a", 2) + event(2, "a", 1)
    assert duck.write(catalog, data).returncode == 0
    rows = duck.query("SELECT ref->>'id', kind, seq FROM events ORDER BY 1, 2")
    assert rows == [("1", "a", 3), ("1", "b", 1), ("2", "a", 1)]


def test_append_dedup_needs_a_known_primary_key(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "append_dedup", primary_key=[["missing"]])
    result = duck.write(catalog, user(1))
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"
    assert "missing" in result.errors[0]["message"]


# ------------------------------------------------------------------------------------------------
# states and commits
# ------------------------------------------------------------------------------------------------


def test_states_are_echoed_in_order_with_destination_stats(duck: Duck) -> None:
    other = stream("other", {"id": {"type": "integer"}})
    catalog = configured_catalog([USERS, other], "append")
    data = (
        user(1)
        + rec("other", {"id": 1})
        + user(2)
        + state("users", "u1")
        + rec("other", {"id": 2})
        + state("other", "o1")
        + state("users", "u2")
    )
    global_state: dict[str, Any] = {
        "type": "STATE",
        "state": {"type": "GLOBAL", "global": {"shared_state": {"g": 1}, "stream_states": []}},
    }
    data += user(3) + rec("other", {"id": 3}) + json.dumps(global_state).encode() + b"\n"
    result = duck.write(catalog, data)
    states = result.states
    assert [s.get("stream", {}).get("stream_state") for s in states] == [
        {"v": "u1"},
        {"v": "o1"},
        {"v": "u2"},
        None,
    ]
    assert [s["destinationStats"]["recordCount"] for s in states] == [2, 2, 0, 2]
    assert states[3]["global"] == global_state["state"]["global"]
    # apart from destinationStats the echo is the state that was sent
    sent = json.loads(state("users", "u1"))["state"]
    assert {k: v for k, v in states[0].items() if k != "destinationStats"} == sent


def test_records_after_the_last_state_are_committed_at_the_end(duck: Duck) -> None:
    result = duck.write(configured_catalog([USERS]), user(1) + state("users", 1) + user(2))
    assert result.returncode == 0
    assert duck.query("SELECT id FROM users ORDER BY id") == [(1,), (2,)]


@pytest.fixture
def writer(duck: Duck) -> Iterator[Callable[[dict[str, Any]], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(catalog: dict[str, Any]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            duck.argv(catalog), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def read_state(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        assert line, "the destination ended without echoing the state"
        message = json.loads(line)
        if message["type"] == "STATE":
            return message["state"]  # type: ignore[no-any-return]


def test_an_echoed_state_is_durable_and_nothing_after_it_is(
    duck: Duck, writer: Callable[[dict[str, Any]], subprocess.Popen[bytes]]
) -> None:
    process = writer(configured_catalog([USERS], "append"))
    assert process.stdin is not None
    for n in range(3):
        process.stdin.write(b"".join(user(n * 100 + i) for i in range(100)))
        process.stdin.write(state("users", n))
        process.stdin.flush()
        assert read_state(process)["stream"]["stream_state"] == {"v": n}
    # more records without a state, then the destination dies
    process.stdin.write(b"".join(user(1000 + i) for i in range(500)))
    process.stdin.flush()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert duck.query("SELECT count(*), min(id), max(id) FROM users") == [(300, 0, 299)]


def test_an_unknown_stream_fails_and_keeps_only_what_was_committed(duck: Duck) -> None:
    data = user(1) + state("users", 1) + user(2) + rec("elsewhere", {"id": 9}) + user(3)
    result = duck.write(configured_catalog([USERS]), data)
    assert result.returncode != 0
    [error] = result.errors
    assert "elsewhere" in error["message"]
    assert len(result.states) == 1
    assert duck.query("SELECT id FROM users") == [(1,)]


def test_empty_input_changes_nothing(duck: Duck) -> None:
    catalog = configured_catalog([USERS], "overwrite", sync_mode="full_refresh")
    duck.write(catalog, user(1) + state("users", 1))
    result = duck.write(catalog, b"")
    assert result.returncode == 0
    assert duck.query("SELECT id FROM users") == [(1,)]


def test_namespace_is_the_schema_and_other_lines_are_ignored(duck: Duck) -> None:
    namespaced = USERS | {"namespace": "crm"}
    data = (
        b'{"type":"LOG","log":{"level":"INFO","message":"hello"}}\n'
        + b"not json at all\n\n"
        + rec("users", {"id": 5}, namespace="crm")
        + state("users", 1)
    )
    result = duck.write(configured_catalog([namespaced]), data)
    assert result.returncode == 0, result.stderr
    assert duck.query("SELECT id FROM crm.users") == [(5,)]


def test_a_big_record(duck: Duck) -> None:
    blob = "x" * (20 << 20)
    text = stream("blobs", {"id": {"type": "integer"}, "blob": {"type": "string"}})
    data = rec("blobs", {"id": 1, "blob": blob}) + rec("blobs", {"id": 2, "blob": "small"})
    result = duck.write(configured_catalog([text]), data)
    assert result.returncode == 0, result.stderr
    assert duck.query("SELECT id, length(blob) FROM blobs ORDER BY id") == [(1, 20 << 20), (2, 5)]


def test_bad_config_and_catalog(duck: Duck, write_json: WriteJson) -> None:
    catalog = duck.catalog_file(configured_catalog([USERS]))
    no_path = write_json("nopath.json", {"schema": "x"})
    result = run([*DUCK, "write", "--config", str(no_path), "--catalog", str(catalog)])
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"
    broken = write_json("broken.json", {"streams": [{"stream": {"name": "x"}}]})
    result = run([*DUCK, "write", "--config", str(duck.config), "--catalog", str(broken)])
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"


def test_append_with_a_minimum_generation_drops_older_generations(duck: Duck) -> None:
    def catalog(generation: int, minimum: int) -> dict[str, Any]:
        return configured_catalog(
            [USERS], "append", generation_id=generation, minimum_generation_id=minimum
        )

    complete = status("users", "COMPLETE")
    duck.write(catalog(1, 0), user(1) + complete)
    duck.write(catalog(2, 0), user(2) + complete)  # a merge refresh keeps generation 1
    assert duck.query("SELECT id FROM users ORDER BY id") == [(1,), (2,)]
    duck.write(catalog(3, 3), user(3))  # a truncate refresh that never completes drops nothing
    assert duck.query("SELECT id FROM users ORDER BY id") == [(1,), (2,), (3,)]
    duck.write(catalog(4, 4), user(4) + complete)  # one that completes: only generation 4 stays
    assert duck.query("SELECT id, _ferry_generation_id FROM users") == [(4, 4)]


@pytest.mark.parametrize("mode", ["append", "append_dedup"])
def test_crlf_line_endings(duck: Duck, mode: str) -> None:
    data = (user(1) + user(2) + state("users", 1) + user(3)).replace(b"\n", b"\r\n")
    result = duck.write(configured_catalog([USERS], mode), data)
    assert result.returncode == 0, result.stderr
    assert len(result.states) == 1
    assert duck.query("SELECT id, name FROM users ORDER BY id") == [
        (1, "user 1"),
        (2, "user 2"),
        (3, "user 3"),
    ]


# ------------------------------------------------------------------------------------------------
# overwrite and stream statuses
# ------------------------------------------------------------------------------------------------


def status(name: str, value: str) -> bytes:
    stream_status = {"stream_descriptor": {"name": name}, "status": value}
    trace = {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": stream_status}
    return json.dumps({"type": "TRACE", "trace": trace}).encode() + b"\n"


def overwrite_users() -> dict[str, Any]:
    return configured_catalog([USERS], "overwrite", sync_mode="full_refresh")


def first_overwrite(duck: Duck, catalog: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """A complete overwrite of users 1 and 2; every column of the rows it left."""
    data = status("users", "STARTED") + user(1) + user(2) + state("users", 1)
    result = duck.write(catalog or overwrite_users(), data + status("users", "COMPLETE"))
    assert result.returncode == 0, result.stderr
    return users_rows(duck)


def users_rows(duck: Duck) -> list[tuple[Any, ...]]:
    return duck.query("SELECT * FROM users ORDER BY id")  # _ferry_raw_id tells writes apart


def table_names(duck: Duck) -> list[str]:
    return [str(row[0]) for row in duck.query("SELECT table_name FROM duckdb_tables() ORDER BY 1")]


def write_then_crash(process: subprocess.Popen[bytes], data: bytes, echoes: int) -> None:
    """Feed data, wait for `echoes` states to come back, then SIGKILL the destination."""
    assert process.stdin is not None
    process.stdin.write(data)
    process.stdin.flush()
    for _ in range(echoes):
        read_state(process)
    process.send_signal(signal.SIGKILL)
    process.wait()


def warnings(result: Result) -> list[str]:
    return [m["log"]["message"] for m in result.of_type("LOG") if m["log"]["level"] == "WARN"]


def test_overwrite_keeps_the_old_rows_until_the_stream_is_complete(
    duck: Duck, writer: Callable[[dict[str, Any]], subprocess.Popen[bytes]]
) -> None:
    before = first_overwrite(duck)
    data = status("users", "STARTED") + user(7) + state("users", 1) + user(8)
    write_then_crash(writer(overwrite_users()), data, echoes=1)  # user 7 was committed
    assert users_rows(duck) == before
    assert table_names(duck) == ["_ferry_staging_users", "users"]
    # The next run replaces the crashed run's staging table, and completes.
    data = status("users", "STARTED") + user(9) + state("users", 1) + status("users", "COMPLETE")
    assert duck.write(overwrite_users(), data).returncode == 0
    assert duck.query("SELECT id FROM users") == [(9,)]
    assert table_names(duck) == ["users"]


def test_complete_replaces_the_table_at_once_even_without_records(
    duck: Duck, writer: Callable[[dict[str, Any]], subprocess.Popen[bytes]]
) -> None:
    first_overwrite(duck)
    data = status("users", "STARTED") + status("users", "COMPLETE") + state("users", 2)
    write_then_crash(writer(overwrite_users()), data, echoes=1)  # no end of input
    assert duck.query("SELECT count(*) FROM users") == [(0,)]
    assert table_names(duck) == ["users"]


def test_incomplete_keeps_the_old_rows_exactly_and_says_so(duck: Duck) -> None:
    other = stream("other", {"id": {"type": "integer"}})
    catalog = configured_catalog([USERS], "overwrite", sync_mode="full_refresh")
    catalog["streams"] += configured_catalog([other], "append")["streams"]
    before = first_overwrite(duck, catalog)
    data = status("users", "STARTED") + status("other", "STARTED")
    data += user(7) + rec("other", {"id": 1}) + state("users", 1) + user(8)
    data += status("users", "INCOMPLETE") + status("other", "INCOMPLETE") + state("other", 1)
    result = duck.write(catalog, data)
    assert result.returncode == 0, result.stderr
    assert len(result.states) == 2  # what came before each state was durable, as always
    assert users_rows(duck) == before
    assert duck.query("SELECT id FROM other") == [(1,)]  # append streams are not affected
    assert table_names(duck) == ["other", "users"]
    [warning] = warnings(result)
    assert '"main"."users"' in warning
    assert "keeps its previous contents" in warning
    logs = [m["log"]["message"] for m in result.of_type("LOG")]
    assert '"main"."users": 1 records staged and dropped' in logs


def test_started_then_end_of_input_without_complete_keeps_the_old_rows(duck: Duck) -> None:
    before = first_overwrite(duck)
    data = status("users", "STARTED") + user(7) + state("users", 1) + user(8)
    result = duck.write(overwrite_users(), data)
    assert result.returncode == 0, result.stderr
    assert len(result.states) == 1
    assert users_rows(duck) == before
    assert table_names(duck) == ["users"]
    [warning] = warnings(result)
    assert "the input ended before the stream was COMPLETE" in warning


def test_without_any_status_the_overwrite_swaps_at_the_end_of_the_input(
    duck: Duck, writer: Callable[[dict[str, Any]], subprocess.Popen[bytes]]
) -> None:
    assert duck.write(overwrite_users(), user(1) + user(2) + state("users", 1)).returncode == 0
    before = users_rows(duck)
    write_then_crash(writer(overwrite_users()), user(7) + state("users", 1), echoes=1)
    assert users_rows(duck) == before
    result = duck.write(overwrite_users(), user(9) + state("users", 1) + user(10))
    assert result.returncode == 0, result.stderr
    assert duck.query("SELECT id FROM users ORDER BY id") == [(9,), (10,)]
    assert table_names(duck) == ["users"]
    assert warnings(result) == []


def test_a_leftover_staging_table_with_other_columns_is_replaced(duck: Duck) -> None:
    first_overwrite(duck)
    with duckdb.connect(str(duck.path)) as con:
        con.execute("CREATE TABLE _ferry_staging_users (junk VARCHAR)")
        con.execute("INSERT INTO _ferry_staging_users VALUES ('left by a crash')")
    data = status("users", "STARTED") + user(7) + status("users", "COMPLETE")
    assert duck.write(overwrite_users(), data).returncode == 0
    assert duck.query("SELECT id, name FROM users") == [(7, "user 7")]
    assert "junk" not in duck.columns("users")
    assert table_names(duck) == ["users"]


def test_a_table_named_like_a_staging_table_is_refused(duck: Duck) -> None:
    catalog = configured_catalog([stream("_ferry_staging_users", {"id": {"type": "integer"}})])
    result = duck.write(catalog, rec("_ferry_staging_users", {"id": 1}))
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"
    assert "reserved" in result.errors[0]["message"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_removes_the_batch_files(
    duck: Duck,
    writer: Callable[[dict[str, Any]], subprocess.Popen[bytes]],
    ferry_home: Path,
    signum: int,
) -> None:
    """Batch files hold records: they live under $FERRY_HOME/run and go with the process."""
    process = writer(configured_catalog([USERS], "append"))
    assert process.stdin is not None
    process.stdin.write(b"".join(user(i) for i in range(100)) + state("users", 1))
    process.stdin.flush()
    read_state(process)
    (batches,) = (ferry_home / "run").iterdir()  # made before the first batch
    process.send_signal(signum)
    assert process.wait() == -signum or process.returncode == 128 + signum
    assert not batches.exists()
