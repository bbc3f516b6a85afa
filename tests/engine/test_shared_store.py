"""Many ferry processes against one PostgreSQL store (a real server on loopback), as Jobs on
several nodes would be: distinct connections all sync with exact counts, syncs of one
connection never overlap, and a SIGKILLed holder's lock is released without any cleanup."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.postgres

HOLD = Path(__file__).parent.parent / "store" / "store_child.py"
COUNT = 3000  # records per stream
STREAMS = 2


def connection_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    source = {"count": COUNT, "streams": STREAMS, "state_every": 250}
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "source": {"connector": "source-generator", "config": source},
                "destination": {"connector": "destination-null", "config": {}},
            }
        )
    )
    return path


def password(url: str) -> str:
    secret = urlsplit(url).password
    assert secret
    return secret


def store_env(url: str) -> dict[str, str]:
    """The store URL in FERRY_STATE_DB, its password left to ${PGPASSWORD_FERRY}: never in argv."""
    return {
        **os.environ,
        "FERRY_STATE_DB": url.replace(password(url), "${PGPASSWORD_FERRY}"),
        "PGPASSWORD_FERRY": password(url),
    }


def ferry(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def runs(env: dict[str, str], connection: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "ferry", "runs", str(connection), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def test_eight_processes_distinct_connections_succeed_and_one_connection_never_overlaps(
    postgres_url: str, tmp_path: Path
) -> None:
    env = store_env(postgres_url)
    distinct = [connection_file(tmp_path, f"conn-{i}") for i in range(5)]
    shared = connection_file(tmp_path, "shared")
    processes = [ferry(env, "sync", str(path), "--json") for path in distinct]
    processes += [
        ferry(env, "sync", str(shared), "--json", "--wait=5m", "--full-refresh") for _ in range(3)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert password(postgres_url) not in out + err
        summary = json.loads(out)
        assert summary["status"] == "succeeded"
        assert summary["records"] == COUNT * STREAMS
    for path in distinct:
        (run,) = runs(env, path)
        assert (run["status"], run["records"]) == ("succeeded", COUNT * STREAMS)
    history = runs(env, shared)
    assert [run["status"] for run in history] == ["succeeded"] * 3
    assert all(run["records"] == COUNT * STREAMS for run in history)
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
        for r in history
    )
    # Whole seconds: a run may start in the second the previous one ended, never before.
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended, f"runs of one connection overlapped: {spans}"


def test_a_holder_on_another_host_is_named_and_its_sigkill_releases_the_lock(
    postgres_url: str, tmp_path: Path
) -> None:
    env = store_env(postgres_url)
    path = connection_file(tmp_path, "held")
    holder = subprocess.Popen(
        [sys.executable, str(HOLD), postgres_url, "--connection", "held", "--hold"],
        env={**os.environ, "POD_NAME": "ferry-job-abc12"},  # another "host": a pod elsewhere
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        run_id = int(holder.stdout.readline().split()[1])

        refused = ferry(env, "sync", str(path))
        _, err = refused.communicate(timeout=120)
        assert refused.returncode == 2, err
        assert "already being synced" in err
        assert f"run {run_id}" in err
        assert f"pid {holder.pid} on ferry-job-abc12" in err
        assert password(postgres_url) not in err

        waiting = ferry(env, "sync", str(path), "--json", "--wait", "5m")
        time.sleep(2)  # it is waiting: the holder's host cannot be judged, only its lock
        assert waiting.poll() is None
        holder.kill()  # no cleanup at all: the server drops the dead session's locks
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
        assert json.loads(out)["records"] == COUNT * STREAMS
    finally:
        holder.kill()
        holder.wait()
    statuses = [(run["run_id"], run["status"]) for run in runs(env, path)]
    assert statuses[-1] == (run_id, "abandoned")
    assert statuses[0][1] == "succeeded"
