"""Output for machines: `--log-format json` (one JSON object per log line) and
`--metrics-file` (Prometheus text format), from real connector runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from clikit import Ferry
from prometheus_client.parser import text_string_to_metric_families

from ferry.cli import progress
from ferry.cli.metrics import RunMetrics, render_metrics, write_metrics_file
from ferry.engine.results import StreamResult, SyncResult

SECRET = "js0n-l0g-s3cret"
LEAKY = json.dumps({"api_key": SECRET, "count": 1, "mode": "leak"})  # protocol.sh echoes it

LOG_KEYS = {"time", "level", "logger", "connection", "run_id", "role", "message"}


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line, parsed: a line that is not one JSON object fails the test."""
    entries = [json.loads(line) for line in stderr.splitlines()]
    for entry in entries:
        assert set(entry) >= LOG_KEYS, entry
    return entries


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a metrics file, read by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_json_logs_before_or_after_the_command_are_masked(
    ferry: Ferry, protocol_sh: str, write_config: Callable[[str], str]
) -> None:
    config = write_config(LEAKY)
    for argv in (
        ["--log-format", "json", "-vv", "check", protocol_sh, "--config", config],
        ["check", protocol_sh, "--config", config, "-vv", "--log-format", "json"],
    ):
        result = ferry(*argv)
        assert result.code == 1
        assert SECRET not in result.err
        entries = json_lines(result.err)
        messages = {(e["logger"], e["message"]) for e in entries}
        assert ("ferry.connector.protocol.sh", "logging the key **********") in messages
        assert ("ferry.connector.protocol.sh", "stderr text with the key **********") in messages


def test_an_error_is_a_json_line_with_the_environment_variable(ferry_process: Ferry) -> None:
    result = ferry_process("spec", "/no/such/connector", env={"FERRY_LOG_FORMAT": "json"})
    assert result.code == 2
    [entry] = json_lines(result.err)
    assert entry["level"] == "error"
    assert entry["message"] == "connector /no/such/connector does not exist"
    bad = ferry_process("connectors", "list", env={"FERRY_LOG_FORMAT": "yaml"})
    assert bad.code == 2
    assert "FERRY_LOG_FORMAT='yaml' is not one of text, json" in bad.err


def test_a_sync_logs_json_and_writes_its_metrics(
    ferry_process: Ferry, source_faker: str, tmp_path: Path
) -> None:
    connection = tmp_path / "faker.yaml"
    connection.write_text(
        yaml.safe_dump(
            {
                "name": "faker-metrics",
                "source": {"connector": "source-faker", "config": {"count": 120, "seed": 1}},
                "destination": {
                    "connector": "destination-duckdb",
                    "config": {"path": str(tmp_path / "faker.duckdb")},
                },
            }
        )
    )
    prom = tmp_path / "textfile" / "ferry.prom"
    prom.parent.mkdir()
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    # No --json: the progress lines ferry prints while it syncs must be JSON lines too.
    result = ferry_process(
        "sync", str(connection), "--state-db", state_db, "--metrics-file", str(prom),
        "-v", "--log-format", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    runs = ferry_process("runs", str(connection), "--state-db", state_db, "--json")
    [run] = json.loads(runs.out)

    entries = json_lines(result.err)
    roles = {e["role"] for e in entries if e["logger"].startswith("ferry.connector.")}
    assert roles == {"source", "destination"}
    during_run = [e for e in entries if e["run_id"] is not None]
    assert during_run
    assert {(e["connection"], e["run_id"]) for e in during_run} == {
        ("faker-metrics", run["run_id"])
    }

    samples = metrics(prom)
    labels = (("connection", "faker-metrics"),)
    assert samples["ferry_sync_status", (*labels, ("status", "succeeded"))] == 1
    assert samples["ferry_sync_status", (*labels, ("status", "failed"))] == 0
    assert samples["ferry_sync_attempts", labels] == 1
    assert samples["ferry_sync_run_id", labels] == run["run_id"]
    assert samples["ferry_sync_states_committed", labels] == run["states_committed"]
    assert samples["ferry_sync_duration_seconds", labels] > 0
    for stream in run["streams"]:
        per_stream = (*labels, ("namespace", ""), ("stream", stream["stream"]))
        assert samples["ferry_sync_records_sent", per_stream] == stream["records_sent"]
        assert samples["ferry_sync_bytes_sent", per_stream] == stream["bytes_sent"]
        assert samples["ferry_sync_records_committed", per_stream] == stream["records_committed"]
        assert samples["ferry_sync_bytes_committed", per_stream] == stream["bytes_committed"]
        assert (
            samples["ferry_sync_stream_states_committed", per_stream]
            == (stream["states_committed"])
        )
    assert sorted(p.name for p in prom.parent.iterdir()) == ["ferry.prom"]  # no temp file left


def test_a_failed_sync_still_writes_its_metrics(
    ferry: Ferry, connectors_sh: Path, tmp_path: Path
) -> None:
    connection = tmp_path / "crash.yaml"
    connection.write_text(
        yaml.safe_dump(
            {
                "name": "crashing",
                "source": {"connector": str(connectors_sh / "crash.sh")},
                "destination": {"connector": "destination-null"},
            }
        )
    )
    prom = tmp_path / "ferry.prom"
    prom.write_text("stale\n")
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    result = ferry("sync", str(connection), "--metrics-file", str(prom), "--state-db", state_db)
    assert result.code == 3
    samples = metrics(prom)
    run = (("connection", "crashing"),)
    assert samples["ferry_sync_status", (*run, ("status", "failed"))] == 1
    assert samples["ferry_sync_status", (*run, ("status", "succeeded"))] == 0
    assert ("ferry_sync_attempts", run) not in samples  # it failed before a run began


def test_label_values_are_escaped(tmp_path: Path) -> None:
    """Stream names are the source's: quotes, backslashes and newlines survive the round trip."""
    odd = 'we"ird\\name\nwith a newline'
    result = SyncResult(
        connection="c",
        run_id=7,
        status="succeeded",
        attempts=1,
        duration=1.5,
        streams=[StreamResult(odd, "ns", 3, 30, 3, 30, 1, 0)],
        states_committed=1,
    )
    prom = tmp_path / "m.prom"
    write_metrics_file(prom, render_metrics([RunMetrics("c", "succeeded", 1.5, result)]))
    samples = metrics(prom)
    labels = (("connection", "c"), ("namespace", "ns"), ("stream", odd))
    assert samples["ferry_sync_records_sent", labels] == 3
    assert samples["ferry_sync_run_id", (("connection", "c"),)] == 7


def test_many_connections_write_one_metrics_file_and_name_themselves_in_json_logs(
    ferry_process: Ferry, tmp_path: Path
) -> None:
    """`ferry sync A.yaml B.yaml`: every connection's metrics in the one file, every JSON log
    line (connector output, progress, the failed connection's error) under its own connection."""
    folder = tmp_path / "connections"
    folder.mkdir()
    for name, destination in (("good", {}), ("broken", {"fail_after": 3})):
        (folder / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "source": {"connector": "source-generator", "config": {"count": 300}},
                    "destination": {"connector": "destination-null", "config": destination},
                }
            )
        )
    prom = tmp_path / "ferry.prom"
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    result = ferry_process(
        "sync", str(folder), "--parallel", "2", "--retries", "0", "--state-db", state_db,
        "--metrics-file", str(prom), "-v", "--log-format", "json",
    )  # fmt: skip
    assert result.code == 1, result.err  # the worst of the two: a connector failed
    runs = {}
    for name in ("good", "broken"):
        listed = ferry_process(
            "runs", str(folder / f"{name}.yaml"), "--state-db", state_db, "--json"
        )
        [runs[name]] = json.loads(listed.out)

    entries = json_lines(result.err)
    during_run = {(e["connection"], e["run_id"]) for e in entries if e["run_id"] is not None}
    assert during_run == {(name, run["run_id"]) for name, run in runs.items()}
    roles = {(e["connection"], e["role"]) for e in entries if e["role"] is not None}
    assert roles >= {("good", "destination"), ("broken", "destination")}
    [failure] = [e for e in entries if e["level"] == "error" and e["logger"] == "ferry"]
    assert (failure["connection"], failure["run_id"]) == ("broken", runs["broken"]["run_id"])
    assert "ferry: error" not in result.err  # no text line among the JSON ones

    samples = metrics(prom)
    for name, run in runs.items():
        labels = (("connection", name),)
        assert samples["ferry_sync_status", (*labels, ("status", run["status"]))] == 1
        assert samples["ferry_sync_run_id", labels] == run["run_id"]
        assert samples["ferry_sync_attempts", labels] == 1
        for stream in run["streams"]:
            per_stream = (*labels, ("namespace", ""), ("stream", stream["stream"]))
            assert samples["ferry_sync_records_sent", per_stream] == stream["records_sent"]
            assert (
                samples["ferry_sync_records_committed", per_stream] == stream["records_committed"]
            )
    assert [runs["good"]["status"], runs["broken"]["status"]] == ["succeeded", "failed"]


@pytest.mark.parametrize("names", [["solo"], ["left", "right"]])
def test_progress_lines_are_json_under_their_connection(
    ferry: Ferry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    """The progress lines a sync prints while it runs (one connection, or several) are JSON log
    lines naming the connection and run; printed often here so that a short sync has some."""
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.01)
    files = []
    for name in names:
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "source": {"connector": "source-generator", "config": {"count": 20000}},
                    "destination": {"connector": "destination-null"},
                }
            )
        )
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    result = ferry("sync", *map(str, files), "--state-db", state_db, "--log-format", "json")
    assert result.code == 0, result.err
    runs = {}
    for name, file in zip(names, files, strict=True):
        [run] = json.loads(ferry("runs", str(file), "--state-db", state_db, "--json").out)
        runs[name] = run["run_id"]
    lines = [e for e in json_lines(result.err) if e["logger"] == "ferry.progress"]
    assert {(e["connection"], e["run_id"]) for e in lines} == set(runs.items())
    assert all("states committed" in e["message"] for e in lines)
