"""`ferry sync` with connectors in Docker containers, plain and in relay mode, through the CLI.

Each test runs `python -m ferry sync conn.yaml --json` in a subprocess (FERRY_HOME comes from the
`ferry_home` fixture), so the engine, the Docker runtime, the relay listener and the store work
together as in production. Images: `python3 scripts/build_images.py`.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from podkit import ferry_sync, stream_records, write_connection

from ferry.store import open_store

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

HANG_GUARD = 300.0


BUILD_HINT = "python3 scripts/build_images.py"
IMAGES = (
    "source-faker",
    "destination-duckdb",
    "source-generator",
    "destination-null",
    "no-entrypoint",
    "sidecar",
)


@pytest.fixture
def images(docker_engine: None) -> dict[str, str]:
    """The built test images (name -> reference), failing clearly if one is missing."""
    refs = {name: f"ferry-test/{name}:dev" for name in IMAGES}
    missing = [
        ref
        for ref in refs.values()
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode
    ]
    if missing:
        pytest.fail(f"test images {', '.join(missing)} are missing: build them with `{BUILD_HINT}`")
    return refs


def containers_of(connection: str) -> list[str]:
    """Names of the containers (any state) ferry made for `connection`."""
    result = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            "label=ferry.owner",
            "--filter",
            f"label=ferry.connection={connection}",
            "--format",
            "{{.Names}} {{.Status}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split("\n")[:-1]


@pytest.fixture
def connection_name() -> Iterator[str]:
    name = f"sd-{uuid.uuid4().hex[:8]}"
    yield name
    for line in containers_of(name):  # a failed test must not leave containers behind
        subprocess.run(["docker", "rm", "-f", "-v", line.split()[0]], capture_output=True)


def committed_streams(connection: str) -> dict[str, Any]:
    with open_store(None) as store:
        messages = store.load_state(connection).to_messages()
    return {
        m.stream.stream_descriptor.name: m.stream.stream_state
        for m in messages
        if m.stream is not None
    }


def table_counts(path: Path, tables: list[str]) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as db:
        counts = {}
        for table in tables:
            row = db.execute(f"select count(*) from {table}").fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


@pytest.mark.parametrize("relay", [False, True], ids=["plain", "relay"])
def test_faker_image_into_duckdb_image(
    images: dict[str, str], connection_name: str, tmp_path: Path, relay: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="docker",
        source={"connector": images["source-faker"], "config": {"count": 300, "seed": 1}},
        destination={
            "connector": images["destination-duckdb"],
            "config": {"path": "/local/x.duckdb"},
            "volumes": {str(out): "/local"},
        },
    )
    code, summary, stderr = ferry_sync(connection, *(["--relay"] if relay else []))
    assert code == 0, stderr
    assert summary["status"] == "succeeded"
    records = stream_records(summary)
    assert set(records) == {"users", "products", "purchases"}
    assert records["users"] == 300
    # The file was written by root in the container: this process (any user) must read it.
    database = out / "x.duckdb"
    mode = database.stat().st_mode
    assert mode & stat.S_IROTH, f"{database} is not world-readable: {stat.filemode(mode)}"
    assert os.access(database, os.R_OK)
    assert table_counts(database, list(records)) == records  # exactly what ferry counted
    assert summary["states_committed"] == sum(s["states_sent"] for s in summary["streams"])
    assert summary["states_committed"] > 0
    assert set(committed_streams(connection_name)) == set(records)
    assert containers_of(connection_name) == []


@pytest.mark.parametrize("relay", [False, True], ids=["plain", "relay"])
def test_generator_image_into_local_duckdb(
    images: dict[str, str], connection_name: str, tmp_path: Path, relay: bool
) -> None:
    """A mixed sync: the source in Docker (relay: true in its block, or not), the destination
    a local process."""
    database = tmp_path / "mixed.duckdb"
    connection = write_connection(
        tmp_path,
        connection_name,
        source={
            "connector": f"docker:{images['source-generator']}",
            "config": {"count": 25_000, "streams": 2, "state_every": 10_000},
            "relay": relay,
        },
        destination={"connector": "destination-duckdb", "config": {"path": str(database)}},
    )
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert stream_records(summary) == {"stream_0": 25_000, "stream_1": 25_000}
    assert table_counts(database, ["stream_0", "stream_1"]) == {
        "stream_0": 25_000,
        "stream_1": 25_000,
    }
    assert summary["states_committed"] == 6  # 10k, 20k and the final state of each stream
    assert committed_streams(connection_name) == {
        "stream_0": {"cursor": 25_000},
        "stream_1": {"cursor": 25_000},
    }
    assert containers_of(connection_name) == []


def test_relay_without_airbyte_entrypoint_is_the_syncs_error(
    images: dict[str, str], connection_name: str, tmp_path: Path
) -> None:
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="docker",
        source={"connector": images["no-entrypoint"], "config": {"count": 10}, "relay": True},
        destination={"connector": images["destination-null"], "config": {}},
    )
    code, _, stderr = ferry_sync(connection)
    assert code == 3, stderr
    assert f"AIRBYTE_ENTRYPOINT is not set in image {images['no-entrypoint']}" in stderr
    assert "exited with code 127" in stderr
    assert containers_of(connection_name) == []


@pytest.mark.parametrize("relay", [False, True], ids=["plain", "relay"])
def test_sigint_mid_sync_leaves_no_container(
    images: dict[str, str], connection_name: str, tmp_path: Path, relay: bool
) -> None:
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="docker",
        source={
            "connector": images["source-generator"],
            "config": {"count": 10**10, "state_every": 100_000},
        },
        destination={"connector": images["destination-null"], "config": {}},
    )
    ferry = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferry",
            "sync",
            str(connection),
            "--json",
            *(["--relay"] if relay else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + HANG_GUARD
        while True:  # until both connectors of the sync run and states were committed
            assert ferry.poll() is None, "ferry ended before it was interrupted"
            assert time.monotonic() < deadline, "the sync never got going"
            names = containers_of(connection_name)
            running = [n for n in names if "-read-" in n or "-write-" in n]
            if running and committed_streams(connection_name):
                break
            time.sleep(0.5)
        ferry.send_signal(signal.SIGINT)
        stdout, stderr = ferry.communicate(timeout=HANG_GUARD)
    finally:
        if ferry.poll() is None:
            ferry.kill()
            ferry.communicate()
    assert ferry.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["status"] == "cancelled"
    assert summary["records_sent"] > 0
    assert containers_of(connection_name) == []
