"""`ferry sync A.yaml B.yaml ...` and directories: concurrent syncs, one summary, worst exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from synckit import ferry


def connection(directory: Path, name: str, destination: dict[str, Any] | None = None) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "source": {"connector": "source-generator", "config": {"count": 200 * len(name)}},
                "destination": {"connector": "destination-null", "config": destination or {}},
            }
        )
    )
    return path


def test_several_files_and_a_directory_sync_with_one_summary_and_the_worst_exit(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder"
    connection(folder, "b")
    connection(folder, "cc")
    failing = connection(tmp_path, "a", {"fail_after": 3})
    result = ferry("sync", str(failing), str(folder), "--parallel", "2", "--retries", "0", "--json")
    assert result.returncode == 1, result.stderr  # the worst: a connector failed
    summaries = json.loads(result.stdout)
    assert [s["connection"] for s in summaries] == ["a", "b", "cc"]  # argument order
    assert [s["status"] for s in summaries] == ["failed", "succeeded", "succeeded"]
    assert [s["exit_code"] for s in summaries] == [1, 0, 0]
    assert [s["records_committed"] for s in summaries[1:]] == [200, 400]

    table = ferry("sync", str(folder), "--no-progress")
    assert table.returncode == 0, table.stderr
    assert "2 connections: 2 succeeded" in table.stdout
    assert table.stdout.count("succeeded") == 3  # two rows and the total line


def test_bad_input_among_many_runs_nothing(tmp_path: Path) -> None:
    first = connection(tmp_path / "one", "same")
    second = connection(tmp_path / "two", "same")
    result = ferry("sync", str(first), str(second))
    assert result.returncode == 2
    assert "same appear more than once" in result.stderr
    (tmp_path / "empty").mkdir()
    result = ferry("sync", str(first), str(tmp_path / "empty"))
    assert result.returncode == 2
    assert "holds no connection file" in result.stderr
    result = ferry("sync", str(first), "--wait", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration" in result.stderr
