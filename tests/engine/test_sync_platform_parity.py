"""`ferry sync` treats a destination as Airbyte's platform does (issue 10): a destination that
enforces the Kotlin bulk CDK's rules (data/cdk_destination.py) on every runtime; refreshes,
clears and generations in destination-duckdb. Real processes, containers, pods and DuckDB."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from synckit import DATA, SCRIPTED, ferry, sync_json, write_connection

CDK_DESTINATION = DATA / "cdk_destination.py"
# An image that has python: the destination script is mounted into it (no image to build).
PYTHON_IMAGE = "ferry-test/destination-null:dev"

RUNTIMES = [
    pytest.param("local", id="local"),
    pytest.param("docker", id="docker", marks=pytest.mark.docker),
    pytest.param("podman", id="podman", marks=pytest.mark.podman),
]


def cdk_destination(
    request: pytest.FixtureRequest, runtime: str, out: Path, **config: Any
) -> dict[str, Any]:
    """The destination block running cdk_destination.py on `runtime`; its report goes to
    out/report.json."""
    out.mkdir(exist_ok=True)
    if runtime == "local":
        return {
            "connector": str(CDK_DESTINATION),
            "config": {"report_to": str(out / "report.json"), **config},
        }
    request.getfixturevalue(f"{runtime}_engine")
    return {
        "connector": f"{runtime}:{PYTHON_IMAGE}",
        "entrypoint": f"python3 /cdk/{CDK_DESTINATION.name}",
        "volumes": {str(DATA): "/cdk", str(out): "/out"},
        "config": {"report_to": "/out/report.json", **config},
    }


def committed(connection: Path) -> list[dict[str, Any]]:
    result = ferry("state", "show", str(connection))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_source_faker_into_a_bulk_cdk_destination(
    request: pytest.FixtureRequest, source_faker: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    connection = write_connection(
        tmp_path,
        source={"connector": source_faker, "config": {"count": 120, "seed": 1}},
        destination=cdk_destination(request, "local", out, reject_every=50),
    )
    code, summary, stderr = sync_json(connection, "--strict-counts")
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    streams = {s["stream"]: s for s in summary["streams"]}
    assert set(report["completed"]) == set(streams)  # one COMPLETE per stream, after the data
    for name, stream in streams.items():
        received = report["records"][name] + report["rejected"][name]
        assert received == stream["records_sent"]
        assert stream["records_rejected"] == report["rejected"][name]
    assert summary["records_rejected"] == sum(report["rejected"].values()) > 0
    assert summary["warnings"] == []  # rejected records are no mismatch
    assert summary["states_committed"] == report["states"] > 0
    # The catalog carries the platform's fields: faker's streams are incremental (minimum 0).
    assert set(report["catalog"]) == set(streams)
    for fields in report["catalog"].values():
        assert fields == {
            "sync_id": summary["run_id"],
            "generation_id": 0,
            "minimum_generation_id": 0,
        }
    runs = json.loads(ferry("runs", str(connection), "--json").stdout)
    assert runs[0]["records_rejected"] == summary["records_rejected"]
    header, row = ferry("runs", str(connection)).stdout.splitlines()[:2]
    starts = [header.index(name) for name in ("sent", "committed", "rejected", "bytes")]
    cells = [row[a:b].strip() for a, b in itertools.pairwise([*starts, header.index("attempts")])]
    assert cells[2] == f"{summary['records_rejected']:,}"  # each value under its own header
    assert cells[3].endswith("B")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_bulk_cdk_destination_after_a_source_that_succeeds_and_one_that_fails(
    request: pytest.FixtureRequest, tmp_path: Path, runtime: str
) -> None:
    """On every runtime. A CDK-like source (STREAM_STATUS STARTED ... COMPLETE) that succeeds:
    the destination gets its data and one COMPLETE. One that fails mid-stream (records and
    states, INCOMPLETE, TRACE ERROR, exit 1): the destination sees only the data, then EOF; it
    exits 0 after echoing its states, and ferry commits exactly those."""
    source: dict[str, Any] = {"count": 30, "state_every": 10, "statuses": True}
    (tmp_path / "ok").mkdir()
    succeeding = write_connection(
        tmp_path / "ok",
        "ok-connection",
        source={"connector": SCRIPTED, "config": source},
        destination=cdk_destination(request, runtime, tmp_path / "ok" / "out"),
    )
    code, summary, stderr = sync_json(succeeding, "--strict-counts")
    assert code == 0, stderr
    report = json.loads((tmp_path / "ok" / "out" / "report.json").read_text())
    assert report == {**report, "records": {"items": 30}, "states": 3, "completed": ["items"]}
    assert summary["states_committed"] == 3

    out = tmp_path / "out"
    source = {**source, "crash_after": 25, "trace_error": "system_error"}
    connection = write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": source},
        destination=cdk_destination(request, runtime, out),
    )
    code, summary, _ = sync_json(connection, "--retries", "0")
    assert code == 1
    assert summary["status"] == "failed"
    assert summary["error"].startswith("source reported system_error: the API said no")
    report = json.loads((out / "report.json").read_text())  # written at a clean EOF
    assert report == {**report, "records": {"items": 25}, "states": 2, "completed": []}
    assert summary["states_committed"] == 2
    [state] = committed(connection)
    assert state["stream"]["stream_state"] == {"cursor": 20}


def test_a_full_refresh_overwrite_stream_is_a_new_generation_every_run(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    connection = write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": {"count": 5}},
        destination=cdk_destination(request, "local", out),
        streams=[
            {"name": "items", "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
        ],
    )
    seen = []
    for _ in range(2):
        code, summary, stderr = sync_json(connection)
        assert code == 0, stderr
        seen.append((summary["run_id"], json.loads((out / "report.json").read_text())["catalog"]))
    assert [catalog["items"] for _, catalog in seen] == [
        {"sync_id": seen[0][0], "generation_id": 1, "minimum_generation_id": 1},
        {"sync_id": seen[1][0], "generation_id": 2, "minimum_generation_id": 2},
    ]


def test_a_destination_that_loses_records_is_a_warning_or_with_strict_counts_a_failure(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = {"connector": SCRIPTED, "config": {"count": 20, "state_every": 10}}
    destination = cdk_destination(request, "local", tmp_path / "out", lose_every=7)
    connection = write_connection(tmp_path, source=source, destination=destination)
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["warnings"] == [
        "destination said 9 records for state #1, ferry sent 10",
        "destination said 9 records for state #2, ferry sent 10",
    ]
    code, summary, _ = sync_json(connection, "--strict-counts", "--full-refresh")
    assert code == 3
    assert summary["status"] == "failed"
    assert summary["error"].startswith("--strict-counts: the counts differ: destination said 9")
    assert summary["states_committed"] == 2  # what the destination confirmed stays committed


def test_the_bulk_cdk_destination_refuses_what_the_platform_never_sends(tmp_path: Path) -> None:
    """The test double itself: it fails as the CDK does, so the tests above can pass only
    because ferry sends none of it."""
    catalog = {
        "streams": [
            {
                "stream": {
                    "name": "s",
                    "json_schema": {},
                    "supported_sync_modes": ["full_refresh"],
                },
                "sync_mode": "full_refresh",
                "destination_sync_mode": "append",
                "generation_id": 1,
                "minimum_generation_id": 0,
                "sync_id": 9,
            }
        ]
    }
    without_ids = {"streams": [{k: v for k, v in catalog["streams"][0].items() if k != "sync_id"}]}

    def with_status(value: str) -> str:
        stream_status = {"stream_descriptor": {"name": "s"}, "status": value}
        trace = {"type": "STREAM_STATUS", "emitted_at": 0, "stream_status": stream_status}
        return json.dumps({"type": "TRACE", "trace": trace})

    cases = {
        "received stream status INCOMPLETE": (catalog, with_status("INCOMPLETE")),
        "received stream status STARTED": (catalog, with_status("STARTED")),
        "not an AirbyteMessage": (catalog, "plain text"),
        "a LOG message reached the destination": (catalog, '{"type": "LOG", "log": {}}'),
        "has no sync_id": (without_ids, ""),
    }
    (tmp_path / "config.json").write_text("{}")
    for expected, (configured, line) in cases.items():
        (tmp_path / "catalog.json").write_text(json.dumps(configured))
        result = subprocess.run(
            [
                sys.executable,
                str(CDK_DESTINATION),
                "write",
                "--config",
                str(tmp_path / "config.json"),
                "--catalog",
                str(tmp_path / "catalog.json"),
            ],
            input=line + "\n" if line else "",
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, expected
        assert expected in result.stdout


# ------------------------------------------------------------------------------------------------
# refresh and clear into destination-duckdb
# ------------------------------------------------------------------------------------------------


def generator_append(tmp_path: Path, database: Path, count: int) -> Path:
    return write_connection(
        tmp_path,
        source={
            "connector": "source-generator",
            "config": {"count": count, "streams": 2, "state_every": 50},
        },
        destination={"connector": "destination-duckdb", "config": {"path": str(database)}},
        streams=[
            {"name": name, "sync_mode": "incremental", "destination_sync_mode": "append"}
            for name in ("stream_0", "stream_1")
        ],
    )


def generations(database: Path) -> dict[str, list[tuple[int, int]]]:
    """(generation, rows) per table."""
    with duckdb.connect(str(database), read_only=True) as db:
        return {
            table: db.execute(
                f"SELECT _ferry_generation_id, count(*) FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            for table in ("stream_0", "stream_1")
        }


def test_refresh_truncate_merge_and_clear_one_stream(tmp_path: Path) -> None:
    database = tmp_path / "g.duckdb"
    assert sync_json(generator_append(tmp_path, database, 100))[0] == 0
    connection = generator_append(tmp_path, database, 150)
    assert sync_json(connection)[0] == 0  # incremental: 50 more rows each
    assert generations(database) == {"stream_0": [(0, 150)], "stream_1": [(0, 150)]}

    code, summary, stderr = sync_json(connection, "--refresh", "truncate", "--stream", "stream_0")
    assert code == 0, stderr
    assert {s["stream"]: s["records_sent"] for s in summary["streams"]} == {
        "stream_0": 150,
        "stream_1": 0,
    }
    assert generations(database) == {"stream_0": [(1, 150)], "stream_1": [(0, 150)]}

    code, _, stderr = sync_json(connection, "--refresh", "merge", "--stream", "stream_1")
    assert code == 0, stderr
    assert generations(database) == {"stream_0": [(1, 150)], "stream_1": [(0, 150), (1, 150)]}

    result = ferry("clear", str(connection), "--stream", "stream_0")
    assert result.returncode == 0, result.stderr
    assert "cleared stream_0" in result.stdout
    assert generations(database) == {"stream_0": [], "stream_1": [(0, 150), (1, 150)]}
    assert [s["stream"]["stream_descriptor"]["name"] for s in committed(connection)] == ["stream_1"]

    code, summary, stderr = sync_json(connection)  # stream_0 starts over, in generation 2
    assert code == 0, stderr
    assert generations(database)["stream_0"] == [(2, 150)]


def test_unknown_stream_names_are_refused(tmp_path: Path) -> None:
    connection = generator_append(tmp_path, tmp_path / "g.duckdb", 10)
    code, _, stderr = sync_json(connection, "--refresh", "merge", "--stream", "nope")
    assert code == 2
    assert "not a stream of this connection: 'nope'" in stderr
    result = ferry("clear", str(connection), "--stream", "stream_0", "--stream", "x")
    assert result.returncode == 2
    assert "not a stream of this connection: 'x'" in result.stderr
    result = ferry("sync", str(connection), "--stream", "stream_0")
    assert result.returncode == 2
    assert "add --refresh" in result.stderr
