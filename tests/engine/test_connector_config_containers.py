"""The rotating single-use-token source and the platform's environment in containers: Docker
(plain and through the relay sidecars) and a podman pod.

The source script runs in the Python test image `ferry-test/source-generator:dev` (its entrypoint
replaced by `python3 /rot/rotating_source.py`); the directory holding the script and the issued
token is mounted at /rot, so the token survives from one container or pod to the next. The
destination is the local destination-null. Images: `python3 scripts/build_images.py`.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from synckit import dumped_env, issued_token, rotating_source, sync_json, write_connection

from ferry.store import open_store

IMAGE = "ferry-test/source-generator:dev"


def stored_token(connection: str) -> str | None:
    with open_store(None) as store:
        stored = store.load_connector_config(connection, "source")
    return None if stored is None else str(stored.config["refresh_token"])


def image_present(engine: str) -> None:
    found = subprocess.run([engine, "image", "inspect", IMAGE], capture_output=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"{engine} lacks {IMAGE}: build it with scripts/build_images.py")


@pytest.fixture
def connection_name() -> str:
    return f"rot-{uuid.uuid4().hex[:8]}"


def rotation_rounds(
    tmp_path: Path, name: str, runtime: str, syncs: int, **options: Any
) -> dict[str, str]:
    """`syncs` syncs in a row, then one whose read crashes after rotating (no retry), then one
    more; every one but the crashed one succeeds. Returns the last read's environment."""
    shared = tmp_path / "shared"
    connection = write_connection(
        tmp_path,
        name,
        source=rotating_source(shared, image=f"{runtime}:{IMAGE}", **options),
        destination={"connector": "destination-null", "config": {}},
    )
    for number in range(1, syncs + 1):
        code, summary, stderr = sync_json(connection)
        assert code == 0, stderr
        assert summary["records_sent"] == 5
        assert issued_token(shared) == stored_token(name) == f"tok-{2 * number}"
    env = dumped_env(shared, "read")
    assert env["WORKER_JOB_ID"] == str(summary["run_id"])

    (shared / "crash").touch()
    code, summary, stderr = sync_json(connection, "--retries", "0")
    assert code == 3, stderr
    assert summary["status"] == "failed"
    assert issued_token(shared) == stored_token(name) == f"tok-{2 * syncs + 2}"
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    return env


def assert_platform_env(env: dict[str, str]) -> None:
    assert env["WORKER_JOB_ATTEMPT"] == "1"
    assert env["WORKER_CONNECTOR_IMAGE"] == IMAGE
    assert env["USE_STREAM_CAPABLE_STATE"] == "true"
    assert env["DATA_CHANNEL_MEDIUM"] == "STDIO"
    assert env["DATA_CHANNEL_FORMAT"] == "JSONL"


@pytest.mark.docker
@pytest.mark.parametrize("relay", [False, True], ids=["plain", "relay"])
def test_rotation_and_environment_on_docker(
    docker_engine: None, tmp_path: Path, connection_name: str, relay: bool
) -> None:
    image_present("docker")
    syncs = 1 if relay else 3  # the relay moves the same bytes: one round shows it
    env = rotation_rounds(
        tmp_path, connection_name, "docker", syncs, relay=relay, env={"FROM_CONNECTION": "yes"}
    )
    assert_platform_env(env)
    assert env["FROM_CONNECTION"] == "yes"


@pytest.mark.podman
def test_rotation_and_environment_in_podman_pods(
    podman_engine: None, tmp_path: Path, connection_name: str
) -> None:
    image_present("podman")
    env = rotation_rounds(tmp_path, connection_name, "podman", 2)
    assert_platform_env(env)
