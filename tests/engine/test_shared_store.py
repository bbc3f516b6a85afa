"""Many ferry processes against one PostgreSQL store (a real server on loopback), as Jobs on
several nodes would be: distinct connections all sync with exact counts, syncs of one
connection never overlap, and a SIGKILLed holder's lock is released without any cleanup.
(POD_NAME stands for another pod: the lock never relies on judging a process by its host.)"""

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

import psycopg
import pytest
import yaml

from ferry.store import open_store

pytestmark = pytest.mark.postgres

COUNT = 3000  # records per stream
STREAMS = 2


def connection_file(directory: Path, name: str, count: int = COUNT) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.yaml"
    source = {"count": count, "streams": STREAMS, "state_every": 250}
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
        assert summary["records_committed"] == COUNT * STREAMS
    for path in distinct:
        (run,) = runs(env, path)
        assert (run["status"], run["records_committed"]) == ("succeeded", COUNT * STREAMS)
    history = runs(env, shared)
    assert [run["status"] for run in history] == ["succeeded"] * 3
    assert all(run["records_committed"] == COUNT * STREAMS for run in history)
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
        for r in history
    )
    # Whole seconds: a run may start in the second the previous one ended, never before.
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended, f"runs of one connection overlapped: {spans}"


def running_run(url: str, connection: str, timeout: float = 120) -> int:
    """The id of the connection's running run, once there is one."""
    open_store(url).close()  # the tables exist from here on
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT id FROM runs WHERE connection = %s AND status = 'running'", (connection,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.2)
    raise AssertionError(f"no run of {connection} started within {timeout}s")


def test_a_holder_in_another_pod_is_named_waited_for_and_released_by_its_sigkill(
    postgres_url: str, tmp_path: Path
) -> None:
    env = store_env(postgres_url)
    slow = connection_file(tmp_path / "slow", "held", count=50_000_000)  # runs for minutes
    fast = connection_file(tmp_path, "held")
    # The waiting syncs' source notes each command it runs: none may run while they wait.
    calls = tmp_path / "source-calls"
    source = tmp_path / "noting-source"
    source.write_text(
        f'#!/bin/sh\necho "$1" >> {calls}\nexec {sys.executable} -m ferry_connectors.source_generator "$@"\n'
    )
    source.chmod(0o755)
    settings = yaml.safe_load(fast.read_text())
    fast.write_text(
        yaml.safe_dump({**settings, "source": {**settings["source"], "connector": str(source)}})
    )
    holder = ferry({**env, "POD_NAME": "ferry-job-abc12"}, "sync", str(slow), "--no-progress")
    started = [holder]
    try:
        run_id = running_run(postgres_url, "held")

        refused = ferry(env, "sync", str(fast))
        _, err = refused.communicate(timeout=120)
        assert refused.returncode == 2, err
        assert "already being synced" in err
        assert f"run {run_id}, started" in err
        assert f"pid {holder.pid} on ferry-job-abc12" in err
        assert password(postgres_url) not in err

        waiting = ferry(env, "sync", str(fast), "--json", "--wait", "5m", "--full-refresh")
        clearing = ferry(env, "clear", str(fast), "--wait")  # no limit
        started += [waiting, clearing]
        time.sleep(2)
        assert waiting.poll() is None, "the second sync must wait while the holder lives"
        assert clearing.poll() is None, "a clear must wait while the holder lives"
        assert not calls.exists(), "a sync waiting for the connection ran its source"
        assert holder.poll() is None
        holder.kill()  # SIGKILL, no cleanup at all: the server drops the dead session's locks
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
        assert json.loads(out)["records_committed"] == COUNT * STREAMS
        assert "discover" in calls.read_text().split()
        _, err = clearing.communicate(timeout=300)
        assert clearing.returncode == 0, err
    finally:
        for process in started:
            process.kill()
            process.communicate()
    statuses = {run["run_id"]: run["status"] for run in runs(env, fast)}
    assert statuses[run_id] == "abandoned"
    assert sorted(statuses.values()) == ["abandoned", "succeeded", "succeeded"]
