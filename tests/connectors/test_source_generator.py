"""source-generator, run as a real process."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from connector_helpers import Result, command, configured_catalog, module_command, run

from ferry.protocol import decode_message

GEN = command("source-generator")
WriteJson = Callable[[str, Any], Path]
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def discover(write_json: WriteJson, config: dict[str, Any]) -> list[dict[str, Any]]:
    result = run([*GEN, "discover", "--config", str(write_json("discover.json", config))])
    assert result.returncode == 0, result.stderr
    [catalog] = result.of_type("CATALOG")
    streams: list[dict[str, Any]] = catalog["catalog"]["streams"]
    return streams


def read(
    write_json: WriteJson,
    config: dict[str, Any],
    state: Any = None,
    sync_mode: str = "incremental",
    only: list[str] | None = None,
) -> Result:
    streams = discover(write_json, config)
    if only is not None:
        streams = [s for s in streams if s["name"] in only]
    argv = [
        *GEN,
        "read",
        "--config",
        str(write_json("config.json", config)),
        "--catalog",
        str(write_json("catalog.json", configured_catalog(streams, sync_mode=sync_mode))),
    ]
    if state is not None:
        argv += ["--state", str(write_json("state.json", state))]
    result = run(argv)
    assert result.returncode == 0, result.stderr
    return result


def test_spec_is_a_valid_json_schema_and_runs_as_a_module() -> None:
    for argv in (GEN, module_command("source-generator")):
        result = run([*argv, "spec"])
        assert result.returncode == 0
        [message] = result.messages
        schema = message["spec"]["connectionSpecification"]
        jsonschema.Draft7Validator.check_schema(schema)
        assert set(schema["properties"]) == {
            "count",
            "record_size",
            "streams",
            "state_every",
            "seed",
            "fail_after",
        }
        decode_message(result.stdout.strip())


def test_check_accepts_a_good_config_and_reports_a_bad_one(write_json: WriteJson) -> None:
    good = run([*GEN, "check", "--config", str(write_json("good.json", {"count": 5}))])
    assert (good.returncode, good.status()["status"]) == (0, "SUCCEEDED")
    bad = run([*GEN, "check", "--config", str(write_json("bad.json", {"count": "many"}))])
    assert bad.returncode == 0
    assert bad.status()["status"] == "FAILED"
    assert "count" in bad.status()["message"]
    missing = run([*GEN, "check", "--config", "/nonexistent/config.json"])
    assert missing.returncode == 0
    assert missing.status()["status"] == "FAILED"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["read", "--config", "CONFIG"],  # no --catalog
        ["discover"],  # no --config
    ],
)
def test_bad_usage_is_a_config_error_trace(argv: list[str], write_json: WriteJson) -> None:
    config = str(write_json("config.json", {}))
    result = run([*GEN, *[config if a == "CONFIG" else a for a in argv]])
    assert result.returncode != 0
    [error] = result.errors
    assert error["failure_type"] == "config_error"


def test_invalid_config_in_read_is_a_config_error(write_json: WriteJson) -> None:
    catalog = write_json("catalog.json", {"streams": []})
    config = write_json("config.json", {"streams": 0})
    result = run([*GEN, "read", "--config", str(config), "--catalog", str(catalog)])
    assert result.returncode == 1
    [error] = result.errors
    assert error["failure_type"] == "config_error"
    assert "streams" in error["message"]


def test_discover_declares_streams_keys_and_cursor(write_json: WriteJson) -> None:
    streams = discover(write_json, {"streams": 3})
    assert [s["name"] for s in streams] == ["stream_0", "stream_1", "stream_2"]
    for stream in streams:
        assert stream["supported_sync_modes"] == ["full_refresh", "incremental"]
        assert stream["source_defined_cursor"] is True
        assert stream["default_cursor_field"] == ["id"]
        assert stream["source_defined_primary_key"] == [["id"]]
        properties = stream["json_schema"]["properties"]
        assert properties["id"] == {"type": "integer"}
        assert properties["updated_at"]["format"] == "date-time"
        assert {"name", "payload"} <= set(properties)


def test_read_emits_count_records_per_stream_that_match_the_schema(write_json: WriteJson) -> None:
    config = {"count": 2345, "streams": 3, "state_every": 1000}
    result = read(write_json, config)
    schema = discover(write_json, config)[0]["json_schema"]
    validator = jsonschema.Draft7Validator(schema)
    by_stream: dict[str, list[int]] = {}
    for line in result.stdout.splitlines():
        message = decode_message(line)  # every line is a valid AirbyteMessage
        if message.record is not None:
            record = message.record
            by_stream.setdefault(record.stream, []).append(record.data["id"])
            assert not list(validator.iter_errors(record.data))
            assert set(record.data) == set(schema["properties"])
            # updated_at is 2024-01-01 plus id milliseconds, also across blocks of 1000 ids
            stamp = datetime.fromisoformat(record.data["updated_at"])
            assert stamp == BASE + timedelta(milliseconds=record.data["id"])
    assert set(by_stream) == {"stream_0", "stream_1", "stream_2"}
    for ids in by_stream.values():
        assert ids == list(range(1, 2346))


def test_records_interleave_across_streams(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 30000, "streams": 2, "state_every": 100000})
    order = [r["stream"] for r in result.records]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches >= 3  # round-robin, not one stream after the other


@pytest.mark.parametrize("record_size", [300, 1000, 5000, 50000])
def test_record_size_is_approximately_the_line_size(
    write_json: WriteJson, record_size: int
) -> None:
    result = read(write_json, {"count": 1500, "record_size": record_size})
    sizes = [len(line) + 1 for line in result.stdout.splitlines() if b'"RECORD"' in line]
    assert len(sizes) == 1500
    average = sum(sizes) / len(sizes)
    assert abs(average - record_size) <= 0.05 * record_size + 10


def test_small_record_size_still_gives_complete_records(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 10, "record_size": 1})
    assert [r["data"]["id"] for r in result.records] == list(range(1, 11))
    assert all(r["data"]["payload"] == "" for r in result.records)


def test_a_100_mb_record(write_json: WriteJson) -> None:
    size = 100_000_000
    result = read(write_json, {"count": 2, "record_size": size, "state_every": 1})
    lines = result.stdout.splitlines()
    records = [line for line in lines if line.startswith(b'{"type":"RECORD"')]
    assert len(records) == 2
    for number, line in enumerate(records, 1):
        assert abs(len(line) - size) < 100
        data = json.loads(line)["record"]["data"]
        assert data["id"] == number
        assert len(data["payload"]) > size - 300
    assert [s["stream"]["stream_state"] for s in result.states] == [{"cursor": 1}, {"cursor": 2}]


def test_states_every_n_records_per_stream_with_source_stats(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 2500, "streams": 2, "state_every": 1000})
    seen: Counter[str] = Counter()
    states: dict[str, list[tuple[int, float]]] = {}
    for message in result.messages:
        if message["type"] == "RECORD":
            seen[message["record"]["stream"]] += 1
        elif message["type"] == "STATE":
            state = message["state"]
            assert state["type"] == "STREAM"
            name = state["stream"]["stream_descriptor"]["name"]
            cursor = state["stream"]["stream_state"]["cursor"]
            assert cursor == seen[name]  # the state follows exactly the records it covers
            states.setdefault(name, []).append((cursor, state["sourceStats"]["recordCount"]))
    expected = [(1000, 1000.0), (2000, 1000.0), (2500, 500.0)]
    assert states == {"stream_0": expected, "stream_1": expected}


def test_exact_multiple_of_state_every_gives_no_empty_final_state(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 2000, "state_every": 1000})
    assert [s["stream"]["stream_state"]["cursor"] for s in result.states] == [1000, 2000]


def test_resume_from_a_stream_state(write_json: WriteJson) -> None:
    config = {"count": 1500, "streams": 2, "state_every": 400}
    state = [
        {
            "type": "STREAM",
            "stream": {
                "stream_descriptor": {"name": "stream_1"},
                "stream_state": {"cursor": 1200},
            },
        }
    ]
    result = read(write_json, config, state=state)
    ids: dict[str, list[int]] = {}
    for record in result.records:
        ids.setdefault(record["stream"], []).append(record["data"]["id"])
    assert ids["stream_0"] == list(range(1, 1501))
    assert ids["stream_1"] == list(range(1201, 1501))
    final = [s for s in result.states if s["stream"]["stream_descriptor"]["name"] == "stream_1"]
    assert [s["stream"]["stream_state"]["cursor"] for s in final] == [1500]
    assert final[0]["sourceStats"]["recordCount"] == 300


def test_resume_from_a_legacy_state_and_when_everything_was_read(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 100}, state={"stream_0": {"cursor": 90}})
    assert [r["data"]["id"] for r in result.records] == list(range(91, 101))
    done = read(write_json, {"count": 100}, state={"stream_0": {"cursor": 100}})
    assert done.records == []
    # one state even so, so that a sync of nothing still commits
    assert [s["stream"]["stream_state"] for s in done.states] == [{"cursor": 100}]


def test_full_refresh_ignores_the_state(write_json: WriteJson) -> None:
    result = read(
        write_json, {"count": 50}, state={"stream_0": {"cursor": 40}}, sync_mode="full_refresh"
    )
    assert [r["data"]["id"] for r in result.records] == list(range(1, 51))


def test_a_bad_state_is_a_config_error(write_json: WriteJson) -> None:
    streams = discover(write_json, {})
    argv = [
        *GEN,
        "read",
        "--config",
        str(write_json("config.json", {})),
        "--catalog",
        str(write_json("catalog.json", configured_catalog(streams))),
        "--state",
        str(write_json("state.json", {"stream_0": {"cursor": "yesterday"}})),
    ]
    result = run(argv)
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"


def test_only_the_configured_streams_are_read(write_json: WriteJson) -> None:
    result = read(write_json, {"count": 5, "streams": 3}, only=["stream_2"])
    assert {r["stream"] for r in result.records} == {"stream_2"}


def test_an_unknown_stream_in_the_catalog_is_a_config_error(write_json: WriteJson) -> None:
    stream = discover(write_json, {})[0] | {"name": "stream_7"}
    argv = [
        *GEN,
        "read",
        "--config",
        str(write_json("config.json", {})),
        "--catalog",
        str(write_json("catalog.json", configured_catalog([stream]))),
    ]
    result = run(argv)
    assert result.returncode == 1
    assert "stream_7" in result.errors[0]["message"]


def test_the_seed_decides_the_values(write_json: WriteJson) -> None:
    def values(seed: int) -> list[tuple[Any, ...]]:
        result = read(write_json, {"count": 1200, "seed": seed})
        return [tuple(r["data"].values()) for r in result.records]

    assert values(1) == values(1)
    assert values(1) != values(2)


def test_fail_after_emits_that_many_records_then_a_trace_error(write_json: WriteJson) -> None:
    config = {"count": 2500, "streams": 2, "state_every": 1000, "fail_after": 3100}
    catalog = configured_catalog(discover(write_json, config), sync_mode="full_refresh")
    argv = [*GEN, "read", "--config", str(write_json("config.json", config))]
    result = run([*argv, "--catalog", str(write_json("catalog.json", catalog))])
    assert result.returncode == 1
    assert len(result.records) == 3100
    # No state after the 3100th record: it would cover records that were never sent.
    assert [s["stream"]["stream_state"]["cursor"] for s in result.states] == [1000, 1000, 2000]
    assert result.messages[-1]["type"] == "TRACE"
    assert result.errors[0]["message"] == "fail_after: failing after 3100 records"
