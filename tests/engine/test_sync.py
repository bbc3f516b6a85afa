"""`ferry sync` end to end: real connector processes, a real SQLite store, real DuckDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from synckit import SCRIPTED, ferry, sync_json, write_connection

from ferry.store import open_store


def committed_cursor(connection_name: str = "test-connection") -> Any:
    with open_store(None) as store:
        messages = store.load_state(connection_name).to_messages()
    return [m.stream.stream_state for m in messages if m.stream is not None]


def duck_count(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as db:
        row = db.execute(f"select count(*), count(distinct id) from {table}").fetchone()
    assert row is not None
    return int(row[0])


def generator_to_duckdb(tmp_path: Path, count: int, **source: Any) -> Path:
    return write_connection(
        tmp_path,
        source={
            "connector": "source-generator",
            "config": {"count": count, "streams": 2, "state_every": 1000, **source},
        },
        destination={
            "connector": "destination-duckdb",
            "config": {"path": str(tmp_path / "g.duckdb")},
        },
    )


def test_full_then_incremental_sync_into_duckdb(tmp_path: Path) -> None:
    connection = generator_to_duckdb(tmp_path, 5000)
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["status"] == "succeeded"
    assert {s["stream"]: s["records_sent"] for s in summary["streams"]} == {
        "stream_0": 5000,
        "stream_1": 5000,
    }
    assert duck_count(tmp_path / "g.duckdb", "stream_0") == 5000
    assert {"cursor": 5000} in committed_cursor()
    # Unchanged data: the second sync resumes after the cursor and adds nothing.
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["records_sent"] == 0
    assert duck_count(tmp_path / "g.duckdb", "stream_1") == 5000
    runs = json.loads(ferry("runs", str(connection), "--json").stdout)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[1]["records_sent"] == 10000


def test_full_refresh_overwrite_replaces(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        source={"connector": "source-generator", "config": {"count": 300}},
        destination={
            "connector": "destination-duckdb",
            "config": {"path": str(tmp_path / "o.duckdb")},
        },
        streams=[
            {"name": "stream_0", "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
        ],
    )
    for _ in range(2):
        code, _, stderr = sync_json(connection)
        assert code == 0, stderr
    assert duck_count(tmp_path / "o.duckdb", "stream_0") == 300


def scripted_to_null(
    tmp_path: Path, source: dict[str, Any], destination: dict[str, Any] | None = None
) -> Path:
    return write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": {"count": 100, "state_every": 10, **source}},
        destination={"connector": "destination-null", "config": destination or {}},
    )


def test_destination_that_never_echoes_commits_nothing(tmp_path: Path) -> None:
    connection = scripted_to_null(tmp_path, {}, {"never_echo": True})
    code, summary, _ = sync_json(connection, "--retries", "0")
    assert code == 3
    assert "without confirming 10 of 10 states" in summary["error"]
    assert committed_cursor() == []


def test_destination_crash_keeps_last_echo_and_rerun_completes(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": {"count": 100, "state_every": 10}},
        destination={"connector": "destination-null", "config": {"fail_after": 45}},
    )
    code, summary, _ = sync_json(connection, "--retries", "0")
    assert code != 0
    assert summary["status"] == "failed"
    assert committed_cursor() == [{"cursor": 40}]
    # Same connection without the failure: resumes after 40 and reads exactly the rest.
    connection = scripted_to_null(tmp_path, {})
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["records_sent"] == 60
    assert committed_cursor() == [{"cursor": 100}]


def test_source_crash_is_retried_from_the_committed_state(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    connection = scripted_to_null(tmp_path, {"crash_after": 35, "crash_once": str(marker)})
    code, summary, stderr = sync_json(connection, "--retries", "1")
    assert code == 0, stderr
    assert summary["attempts"] == 2
    assert summary["records_sent"] == 70  # the second attempt resumed after cursor 30
    assert committed_cursor() == [{"cursor": 100}]


def test_config_error_trace_is_not_retried(tmp_path: Path) -> None:
    connection = scripted_to_null(tmp_path, {"crash_after": 5, "trace_error": "config_error"})
    code, summary, _ = sync_json(connection, "--retries", "3")
    assert code == 1
    assert summary["attempts"] == 1
    assert summary["failure_type"] == "config_error"
    assert "the API said no" in summary["error"]


def test_malformed_lines_are_log_output(tmp_path: Path) -> None:
    connection = scripted_to_null(tmp_path, {"garbage": True})
    code, summary, stderr = sync_json(connection, "-v")
    assert code == 0, stderr
    assert summary["records_sent"] == 100
    assert "source | this line is not JSON" in stderr


def test_record_for_a_stream_not_in_the_catalog_fails_clearly(tmp_path: Path) -> None:
    connection = scripted_to_null(tmp_path, {"stray_stream": True})
    code, summary, _ = sync_json(connection, "--retries", "0")
    assert code == 3
    assert "stream 'stray', which is not in the configured catalog" in summary["error"]


def test_sigkill_mid_sync_then_rerun_gives_exact_counts(tmp_path: Path) -> None:
    connection = generator_to_duckdb(tmp_path, 400_000, record_size=300)
    process = subprocess.Popen(
        [sys.executable, "-m", "ferry", "sync", str(connection), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not committed_cursor():
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert committed_cursor(), "no state was committed before the kill"
    code, _, stderr = sync_json(connection)
    assert code == 0, stderr
    for table in ("stream_0", "stream_1"):
        assert duck_count(tmp_path / "g.duckdb", table) == 400_000
    runs = json.loads(ferry("runs", str(connection), "--json").stdout)
    assert runs[0]["status"] == "succeeded"
    assert runs[1]["status"] in ("abandoned", "running")


def test_sigint_stops_both_and_keeps_commits(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        source={
            "connector": "source-generator",
            "config": {"count": 50_000_000, "state_every": 10000},
        },
        destination={"connector": "destination-null", "config": {}},
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ferry", "sync", str(connection), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not committed_cursor():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    summary = json.loads(stdout)
    assert summary["status"] == "cancelled"
    assert summary["states_committed"] >= 1
    assert committed_cursor()
    assert 0 < summary["records_sent"] < 50_000_000


def faker_counts(path: Path) -> dict[str, tuple[int, int]]:
    with duckdb.connect(str(path), read_only=True) as db:
        return {
            table: db.execute(f"select count(*), count(distinct id) from {table}").fetchone()  # type: ignore[misc]
            for table in ("users", "products", "purchases")
        }


@pytest.mark.slow
def test_faker_full_and_incremental_sync_with_dedup(tmp_path: Path, source_faker: str) -> None:
    database = tmp_path / "faker.duckdb"
    connection = write_connection(
        tmp_path,
        source={
            "connector": source_faker,
            "config": {"count": 1000, "seed": 1, "always_updated": False},
        },
        destination={"connector": "destination-duckdb", "config": {"path": str(database)}},
    )
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    by_stream = {s["stream"]: s["records_sent"] for s in summary["streams"]}
    assert by_stream["users"] == 1000
    assert by_stream["products"] == 100  # faker's fixed product list
    first = faker_counts(database)
    assert first["users"] == (1000, 1000)
    assert first["purchases"][0] == first["purchases"][1] == by_stream["purchases"]
    assert summary["warnings"] == []  # faker's sourceStats agree with ferry's counts
    assert len(committed_cursor()) == 3
    # Unchanged data: nothing new is read, and append_dedup leaves no duplicates.
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["records_sent"] == 0
    assert faker_counts(database) == first


def test_state_show_and_reset_one_stream(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        source={"connector": "source-generator", "config": {"count": 50, "streams": 2}},
        destination={"connector": "destination-null", "config": {}},
    )
    code, _, stderr = sync_json(connection)
    assert code == 0, stderr
    shown = json.loads(ferry("state", "show", str(connection), "--stream", "stream_1").stdout)
    assert [m["stream"]["stream_descriptor"]["name"] for m in shown] == ["stream_1"]
    assert ferry("state", "reset", str(connection), "--stream", "stream_1").returncode == 0
    assert committed_cursor() == [{"cursor": 50}]  # only stream_0 is left
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert {s["stream"]: s["records_sent"] for s in summary["streams"]} == {
        "stream_0": 0,
        "stream_1": 50,
    }
    assert ferry("state", "reset", str(connection)).returncode == 0
    assert committed_cursor() == []


def test_connection_file_errors_exit_2_and_name_the_problem(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        source={"conector": "source-generator"},
        destination={"connector": "destination-null"},
    )
    result = ferry("sync", str(connection))
    assert result.returncode == 2
    assert "source: unknown key `conector`" in result.stderr
    connection = write_connection(
        tmp_path,
        source={"connector": "source-generator", "config": {"count": 5}},
        destination={"connector": "destination-null"},
        streams=[{"name": "nope"}],
    )
    result = ferry("sync", str(connection))
    assert result.returncode == 2
    assert "stream 'nope' is not in the catalog (streams: 'stream_0')" in result.stderr


def test_dry_run_prints_pod_manifests_without_secrets_or_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_TEST_TOKEN", "s3cret-value-xyz")
    connection = write_connection(
        tmp_path,
        runtime="kubernetes",
        source={
            "connector": "ferry-test/source-faker:dev",
            "config": {"count": 5, "token": "${FERRY_TEST_TOKEN}"},
            "kubernetes": {"namespace": "etl", "annotations": {"sidecar.istio.io/inject": "false"}},
        },
        destination={"connector": "ferry-test/destination-null:dev"},
    )
    result = ferry("sync", str(connection), "--dry-run")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents if d] == ["Secret", "Pod", "Secret", "Pod"]
    assert all(d["metadata"]["namespace"] == "etl" for d in documents if d)
    source_pod = documents[3]
    assert source_pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "s3cret-value-xyz" not in result.stdout
    assert committed_cursor() == []
    local = write_connection(
        tmp_path,
        source={"connector": "source-generator"},
        destination={"connector": "destination-null"},
    )
    refused = ferry("sync", str(local), "--dry-run")
    assert refused.returncode == 2
    assert "--dry-run prints pod manifests" in refused.stderr


def test_an_option_the_runtime_ignores_is_refused_before_anything_runs(tmp_path: Path) -> None:
    connection = write_connection(
        tmp_path,
        runtime="podman",
        source={"connector": "ferry-test/source-faker:dev", "network": "host"},
        destination={"connector": "ferry-test/destination-null:dev"},
    )
    result = ferry("sync", str(connection), "--dry-run")
    assert result.returncode == 2
    assert "source: network does not apply to the podman runtime" in result.stderr
    assert "kubernetes: {host_network: ...}" in result.stderr


def scripted_to_duckdb(tmp_path: Path, config: dict[str, Any], **stream: str) -> Path:
    return write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": config},
        destination={"connector": "destination-duckdb", "config": {"path": str(tmp_path / "s.db")}},
        streams=[{"name": "items", **stream}],
    )


def test_a_retried_overwrite_stream_reads_from_the_start(tmp_path: Path) -> None:
    """A source that resumes full-refresh streams from their state (as resumable full refresh
    does) must not, on a retry, replace the table with only the rest of the stream."""
    marker = tmp_path / "crashed"
    connection = scripted_to_duckdb(
        tmp_path,
        {"count": 100, "state_every": 10, "crash_after": 35, "crash_once": str(marker)},
        sync_mode="full_refresh",
        destination_sync_mode="overwrite",
    )
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert (summary["status"], summary["attempts"]) == ("succeeded", 2)
    assert duck_count(tmp_path / "s.db", "items") == 100


def test_a_full_refresh_retry_resumes_only_what_this_run_committed(tmp_path: Path) -> None:
    connection = scripted_to_duckdb(
        tmp_path,
        {"count": 100, "state_every": 10},
        sync_mode="incremental",
        destination_sync_mode="append_dedup",
    )
    assert sync_json(connection)[0] == 0
    assert committed_cursor() == [{"cursor": 100}]
    marker = tmp_path / "crashed"  # the first attempt crashes before its first state
    scripted_to_duckdb(
        tmp_path,
        {"count": 100, "state_every": 10, "crash_after": 5, "crash_once": str(marker)},
        sync_mode="incremental",
        destination_sync_mode="append_dedup",
    )
    code, summary, stderr = sync_json(connection, "--full-refresh")
    assert code == 0, stderr
    assert summary["attempts"] == 2
    assert summary["records_sent"] == 100  # the retry read everything, not from cursor 100


def test_a_connector_that_cannot_start_stops_the_other_one(tmp_path: Path) -> None:
    """Source and destination start concurrently; when the source's start fails (its program is
    gone by then), the destination already started is stopped, not left waiting for input."""
    source = tmp_path / "vanishing-source"
    source.write_text(
        "#!/bin/sh\n"
        "case $1 in\n"
        '  spec) echo \'{"type":"SPEC","spec":{"connectionSpecification":{}}}\' ;;\n'
        '  discover) rm "$0"; echo \'{"type":"CATALOG","catalog":{"streams":[{"name":"s",'
        '"json_schema":{},"supported_sync_modes":["full_refresh"]}]}}\' ;;\n'
        "esac\n"
    )
    destination = tmp_path / "waiting-destination"
    destination.write_text(
        "#!/bin/sh\n"
        "case $1 in\n"
        '  spec) echo \'{"type":"SPEC","spec":{"connectionSpecification":{}}}\' ;;\n'
        '  write) echo $$ > "$0.pid"; exec sleep 600 ;;\n'
        "esac\n"
    )
    for script in (source, destination):
        script.chmod(0o755)
    connection = write_connection(
        tmp_path,
        source={"connector": str(source)},
        destination={"connector": str(destination)},
    )
    code, summary, stderr = sync_json(connection, "--retries", "0")
    assert code == 2, stderr
    assert summary["error"] == f"connector executable {source} does not exist"
    pid_file = tmp_path / "waiting-destination.pid"
    if pid_file.exists():  # it had started: it must be gone too (a zombie is gone)
        try:
            stat = Path(f"/proc/{pid_file.read_text().strip()}/stat").read_text()
        except OSError:
            return
        assert stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"), "the destination was left running"
