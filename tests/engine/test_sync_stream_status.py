"""`ferry sync` and stream statuses: what the destination is told about each stream's end (as
Airbyte's platform tells it: COMPLETE after a successful source, nothing but EOF otherwise), and
what that means for an overwrite into destination-duckdb. Real processes, real DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
from synckit import DATA, SCRIPTED, ferry, write_connection
from synckit import sync_json as sync_json_with

RECORDING = str(DATA / "recording_destination.py")


def sync_json(connection: Path) -> tuple[int, dict[str, Any], str]:
    return sync_json_with(connection, "--retries", "0")


# ------------------------------------------------------------------------------------------------
# what the destination receives
# ------------------------------------------------------------------------------------------------


def sent_to_destination(tmp_path: Path, **source: Any) -> tuple[dict[str, Any], list[str]]:
    """Sync the scripted source into a destination that records its input; the summary and
    the input as a list of tokens: "record", "state", or a stream status. Every state carries
    the records before it as sourceStats.recordCount (10 in these runs)."""
    received = tmp_path / "received.jsonl"
    connection = write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": {"count": 20, "state_every": 10, **source}},
        destination={"connector": RECORDING, "config": {"record_to": str(received)}},
    )
    _, summary, _ = sync_json(connection)
    tokens = []
    for line in received.read_bytes().splitlines():
        message = json.loads(line)
        if message["type"] == "TRACE":
            stream_status = message["trace"]["stream_status"]
            assert stream_status["stream_descriptor"] == {"name": "items"}
            tokens.append(stream_status["status"])
        else:
            tokens.append(message["type"].lower())
        if message["type"] == "STATE":
            assert message["state"]["sourceStats"] == {"recordCount": 10.0}
    return summary, tokens


RECORDS_AND_STATES = ["record"] * 10 + ["state"] + ["record"] * 10 + ["state"]


def test_ferry_tells_the_destination_that_a_silent_source_completed(tmp_path: Path) -> None:
    summary, tokens = sent_to_destination(tmp_path)
    assert summary["status"] == "succeeded"
    assert tokens == [*RECORDS_AND_STATES, "COMPLETE"]


def test_the_sources_own_statuses_are_not_forwarded(tmp_path: Path) -> None:
    summary, tokens = sent_to_destination(tmp_path, statuses=True)
    assert summary["status"] == "succeeded"
    assert tokens == [*RECORDS_AND_STATES, "COMPLETE"]


def test_a_failing_source_gets_the_destination_only_its_data_then_eof(tmp_path: Path) -> None:
    summary, tokens = sent_to_destination(tmp_path, crash_after=15)
    assert summary["status"] == "failed"
    assert tokens == RECORDS_AND_STATES[:16]


def test_a_source_that_exits_non_zero_after_its_output_completes_nothing(tmp_path: Path) -> None:
    summary, tokens = sent_to_destination(tmp_path, exit_code=1)
    assert summary["status"] == "failed"
    assert tokens == RECORDS_AND_STATES


def test_a_stream_the_source_reported_complete_is_not_complete_when_it_fails_later(
    tmp_path: Path,
) -> None:
    summary, tokens = sent_to_destination(tmp_path, statuses=True, exit_code=1)
    assert summary["status"] == "failed"
    assert tokens == RECORDS_AND_STATES


# ------------------------------------------------------------------------------------------------
# overwrite into destination-duckdb
# ------------------------------------------------------------------------------------------------


def generator_overwrite(tmp_path: Path, database: Path, **source: Any) -> Path:
    streams = ("stream_0", "stream_1")
    return write_connection(
        tmp_path,
        source={
            "connector": "source-generator",
            "config": {"count": 3000, "streams": 2, "state_every": 500, **source},
        },
        destination={"connector": "destination-duckdb", "config": {"path": str(database)}},
        streams=[
            {"name": name, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
            for name in streams
        ],
    )


def every_row(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Both tables, every column (a fresh _ferry_raw_id per row written tells writes apart)."""
    with duckdb.connect(str(database), read_only=True) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("stream_0", "stream_1")
        }


def test_a_failed_overwrite_sync_keeps_the_previous_tables_exactly(tmp_path: Path) -> None:
    database = tmp_path / "o.duckdb"
    code, _, stderr = sync_json(generator_overwrite(tmp_path, database, seed=1))
    assert code == 0, stderr
    first = every_row(database)
    assert [len(rows) for rows in first.values()] == [3000, 3000]

    failing = generator_overwrite(tmp_path, database, seed=2, fail_after=4200)
    code, summary, _ = sync_json(failing)
    assert code == 1
    assert summary["status"] == "failed"
    assert "fail_after" in summary["error"]
    assert summary["states_committed"] == 8  # the destination still made its writes durable
    assert every_row(database) == first

    code, _, stderr = sync_json(generator_overwrite(tmp_path, database, seed=3, count=2000))
    assert code == 0, stderr
    third = every_row(database)
    assert [len(rows) for rows in third.values()] == [2000, 2000]
    assert third["stream_0"][0] != first["stream_0"][0]
    runs = json.loads(ferry("runs", str(failing), "--json").stdout)
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
