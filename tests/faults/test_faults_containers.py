"""The fault suite on container runtimes: the faults whose handling differs there (a crash, a
SIGKILLed ferry, a hung destination, an idle source), with the same connectors run in an image
(faultkit.Connection with runtime docker or podman). Pods are slow (~10-20 s a sync): podman
gets all but the SIGKILL case, which is tests/runtimes/pods/test_podman.py's heartbeat test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faultkit import (
    Connection,
    assert_fails_clearly,
    assert_recovers,
    containers_left,
    finish,
    read_stderr_until,
)

docker = pytest.mark.usefixtures("docker_engine")


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("podman", marks=pytest.mark.podman),
    ]
)
def runtime(request: pytest.FixtureRequest) -> str:
    """docker or podman, once its engine is known to run."""
    engine: str = request.param
    request.getfixturevalue(f"{engine}_engine")
    return engine


def test_destination_crash_in_a_container(tmp_path: Path, ferry_home: Path, runtime: str) -> None:
    connection = Connection(tmp_path, runtime=runtime).write(destination={"crash_after": 25})
    result = connection.sync()
    assert_fails_clearly(
        result, 3, "the destination exited with code 5", "BOOM: the destination broke on purpose"
    )
    assert_recovers(connection, ferry_home)


def test_idle_source_in_a_container(tmp_path: Path, ferry_home: Path, runtime: str) -> None:
    connection = Connection(tmp_path, runtime=runtime).write({"hang_after": 25})
    result = connection.sync("--idle-timeout", "2")
    assert_fails_clearly(result, 3, "the source sent nothing for", "timeouts.source_idle 2.0s")
    assert_recovers(connection, ferry_home)


@pytest.mark.docker
@docker
def test_sigkill_of_ferry_with_containers(tmp_path: Path, ferry_home: Path) -> None:
    connection = Connection(tmp_path, count=1000, state_every=5, runtime="docker")
    connection.write({"delay": 0.01})
    process = connection.start()
    connection.wait_for_echo(2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Nothing could stop them: the next sync on Docker removes them before it starts its own.
    assert containers_left(connection)
    assert_recovers(connection, ferry_home, rerun_removes_containers=True)


def test_hung_destination_in_a_container_under_sigterm(
    tmp_path: Path, ferry_home: Path, runtime: str
) -> None:
    connection = Connection(tmp_path, count=10_000, state_every=1000, runtime=runtime)
    connection.write({"pad": 1000}, {"hang_after": 1500, "ignore_sigterm": True})
    process = connection.start()
    connection.wait_for_echo(1)
    os.kill(process.pid, signal.SIGTERM)
    said = read_stderr_until(process, "stop again to end it now")
    os.kill(process.pid, signal.SIGTERM)
    result = finish(process, said)
    assert_fails_clearly(result, 130, "the sync was stopped")
    assert_recovers(connection, ferry_home)
