"""PodmanRuntime against real podman pods (`podman kube play` of the Kubernetes manifests).

Every test here plays real pods: init container, wrapper, relay and heartbeat sidecars, Secret
volume and host volumes. Syncs go through the CLI (`python -m ferry sync --json`), so the engine,
the relay listener and the runtime work together as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
from podkit import (
    DUCKDB,
    FAKER,
    GENERATOR,
    NO_ENTRYPOINT,
    NOTHING,
    NULL,
    SIDECAR,
    committed_states,
    ferry_sync,
    heartbeat_budget,
    leftovers,
    pods_of,
    stream_records,
    write_connection,
)

from ferry.engine import commands
from ferry.errors import ConfigError, ConnectorCrashed, ImageUnavailable
from ferry.relay import LOOPBACK_HOST, RelayEndpoint
from ferry.relay.wrapper import DEFAULT_GRACE
from ferry.runtimes.base import (
    ConnectorInvocation,
    ConnectorOptions,
    ConnectorRef,
    RunLabels,
)
from ferry.runtimes.options import decode
from ferry.runtimes.owner import HOST_LABEL, OWNER_LABEL, PID_LABEL, process_start, this_host
from ferry.runtimes.pods.gc import collect_podman
from ferry.runtimes.pods.manifests import build_manifests, for_podman, podman_secrets
from ferry.runtimes.pods.podman import PodmanRuntime

pytestmark = pytest.mark.podman

# --- syncs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pod-per-connector", "single-pod"])
def test_faker_to_duckdb_both_in_pods(
    podman_images: None, connection_name: str, tmp_path: Path, layout: str
) -> None:
    """Per connector, or the single pod (source, destination and ferry's pump in one pod)."""
    out = tmp_path / "out"
    out.mkdir()
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="podman",
        kubernetes={"layout": layout},
        source={"connector": FAKER, "config": {"count": 300, "seed": 1}},
        destination={
            "connector": DUCKDB,
            "config": {"path": "/local/faker.duckdb"},
            "volumes": {str(out): "/local"},
        },
    )
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert summary["status"] == "succeeded"
    records = stream_records(summary)
    assert records["users"] == 300
    assert set(records) == {"users", "products", "purchases"}
    with duckdb.connect(str(out / "faker.duckdb"), read_only=True) as db:
        counts = {
            table: db.execute(f"select count(*) from {table}").fetchone()[0]  # type: ignore[index]
            for table in records
        }
    assert counts == records  # exactly what ferry counted reached the destination
    assert summary["states_committed"] == sum(s["states_sent"] for s in summary["streams"])
    assert leftovers(connection_name) == NOTHING


def test_local_source_into_destination_pod(
    podman_images: None, connection_name: str, tmp_path: Path
) -> None:
    """The destination alone runs as a pod: its stdin arrives over the stdin relay."""
    connection = write_connection(
        tmp_path,
        connection_name,
        source={
            "connector": "source-generator",
            "config": {"count": 20000, "streams": 2, "state_every": 5000},
        },
        destination={"connector": f"podman:{NULL}", "config": {}},
    )
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert stream_records(summary) == {"stream_0": 20000, "stream_1": 20000}
    assert summary["states_committed"] == 8
    assert leftovers(connection_name) == NOTHING


def test_sigint_mid_sync_is_cancelled_and_leaves_no_pod(
    podman_images: None, connection_name: str, tmp_path: Path
) -> None:
    """SIGINT stops the source pod; the sync ends as cancelled (130), not crashed (3): the
    stopped pod's stdout ends, its exit status is an exit status, and every pod is removed."""
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="podman",
        source={"connector": GENERATOR, "config": {"count": 10**10, "state_every": 10000}},
        destination={"connector": NULL, "config": {}},
    )
    ferry = subprocess.Popen(
        [sys.executable, "-m", "ferry", "sync", str(connection), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while True:  # until both sync pods run and a state was committed
            assert ferry.poll() is None, "ferry ended before it was interrupted"
            assert time.monotonic() < deadline, "the sync never committed a state"
            if committed_states(connection_name):
                break
            time.sleep(0.5)
        interrupted = time.monotonic()
        ferry.send_signal(signal.SIGINT)
        stdout, stderr = ferry.communicate(timeout=300)
        print(f"ferry exited {time.monotonic() - interrupted:.1f}s after SIGINT")
    finally:
        if ferry.poll() is None:
            ferry.kill()
            ferry.communicate()
    assert ferry.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["status"] == "cancelled", summary
    assert summary["states_committed"] >= 1
    assert summary["records_sent"] > 0
    deadline = time.monotonic() + 10
    while pods_of(connection_name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pods_of(connection_name) == []


@pytest.mark.parametrize("layout", ["pod-per-connector", "single-pod"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_ferry_gone_mid_sync_pods_exit_within_heartbeat_budget(
    podman_images: None, connection_name: str, tmp_path: Path, how: signal.Signals, layout: str
) -> None:
    """SIGKILL closes ferry's sockets (the relays, or the single pod's control stream, break at
    once); SIGSTOP keeps them open, so only the heartbeat notices that ferry is gone. Either way
    every container exits within the heartbeat budget plus the wrapper's grace period, + 10 s."""
    connection = write_connection(
        tmp_path,
        connection_name,
        runtime="podman",
        kubernetes={"layout": layout},
        source={"connector": GENERATOR, "config": {"count": 10**9, "state_every": 10000}},
        destination={"connector": NULL, "config": {}},
    )
    log = tmp_path / "ferry.log"
    with log.open("wb") as output:
        ferry = subprocess.Popen(
            [sys.executable, "-m", "ferry", "-v", "sync", str(connection), "--json"],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 400
        while not committed_states(connection_name):  # the sync runs: data flows
            assert ferry.poll() is None, f"ferry ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"nothing was committed:\n{log.read_text()}"
            time.sleep(0.5)
        ferry.send_signal(how)
        if how == signal.SIGKILL:
            ferry.wait()
        killed = time.monotonic()
        budget = heartbeat_budget() + DEFAULT_GRACE + 10
        while True:
            pods = pods_of(connection_name)
            alive = [
                f"{c['Names']} ({c['Status']})"
                for pod in pods
                for c in pod["Containers"]
                if not c["Names"].endswith("-infra") and c["Status"] == "running"
            ]
            if not alive:
                print(f"every container exited {time.monotonic() - killed:.1f}s after {how.name}")
                break
            assert time.monotonic() - killed < budget, (
                f"containers still running {budget:.0f}s after ferry was killed: {alive}"
            )
            time.sleep(1)
    finally:
        if ferry.poll() is None:
            ferry.kill()
        ferry.wait()
    # ferry gc sees the orphans (the owner pid is dead) and removes pods, secrets and volumes.
    # (They are garbage to every ferry on this machine: another `ferry gc` running meanwhile
    # may have removed them already; then only the end state can be checked.)
    planned = [line for line in collect_podman(dry_run=True) if connection_name in line]
    if leftovers(connection_name) != NOTHING:
        assert planned
        assert all("would remove" in line for line in planned)
        assert any(f"owner process {ferry.pid} is gone" in line for line in planned)
    collect_podman(dry_run=False)
    assert leftovers(connection_name) == NOTHING


# --- the runtime directly ------------------------------------------------------------------------


def invocation(
    image: str, verb: Any = "spec", files: dict[str, bytes] | None = None, **options: Any
) -> ConnectorInvocation:
    labels = RunLabels(run_id=uuid.uuid4().hex[:8], connection=options.pop("connection"))
    ref = ConnectorRef("podman", image, options=decode(options, ConnectorOptions, "source"))
    return ConnectorInvocation(ref, verb, files or {}, labels)


def test_image_without_airbyte_entrypoint_reports_the_wrappers_127(
    podman_images: None, connection_name: str
) -> None:
    async def run() -> None:
        runtime = PodmanRuntime()
        ref = ConnectorRef("podman", NO_ENTRYPOINT)
        with pytest.raises(ConnectorCrashed) as caught:
            await commands.fetch_spec(ref, runtime)
        message = str(caught.value)
        assert "exited with code 127" in message
        assert f"AIRBYTE_ENTRYPOINT is not set in image {NO_ENTRYPOINT}" in message
        assert "entrypoint: auto" in message  # what to do about it
        # entrypoint: auto derives it from the image's ENTRYPOINT (podman can read the image).
        auto = ConnectorRef("podman", NO_ENTRYPOINT, options=ConnectorOptions(entrypoint="auto"))
        spec = await commands.fetch_spec(auto, runtime)
        assert spec.connectionSpecification["title"] == "Faker Source Spec"
        await runtime.close()

    asyncio.run(run())


def test_terminate_mid_stream_removes_pod_secret_and_volumes(
    podman_images: None, connection_name: str
) -> None:
    async def run() -> None:
        runtime = PodmanRuntime()
        inv = invocation(
            GENERATOR,
            "read",
            {"config": json.dumps({"count": 10**9}).encode(), "catalog": catalog()},
            connection=connection_name,
        )
        process = await runtime.start(inv, lambda line: None)
        first = await process.stdout.read(1 << 16)
        assert b'"RECORD"' in first
        assert len(pods_of(connection_name)) == 1
        await process.terminate(grace=2)
        await process.terminate(grace=2)  # idempotent

    asyncio.run(run())
    assert leftovers(connection_name) == NOTHING


def catalog() -> bytes:
    stream = {
        "stream": {
            "name": "stream_0",
            "json_schema": {},
            "supported_sync_modes": ["full_refresh"],
        },
        "sync_mode": "full_refresh",
        "destination_sync_mode": "append",
    }
    return json.dumps({"streams": [stream]}).encode()


def test_active_deadline_is_enforced(podman_images: None, connection_name: str) -> None:
    """Podman ignores activeDeadlineSeconds; the runtime stops the pod and says why."""

    async def run() -> None:
        runtime = PodmanRuntime()
        inv = invocation(
            GENERATOR,
            "read",
            {"config": json.dumps({"count": 10**9}).encode(), "catalog": catalog()},
            connection=connection_name,
            kubernetes={"active_deadline_seconds": 2},
        )
        process = await runtime.start(inv, lambda line: None)
        with pytest.raises(ConnectorCrashed, match="DeadlineExceeded"):
            await process.wait()  # nobody reads stdout: the source blocks until the deadline
        await process.terminate()

    asyncio.run(run())
    assert leftovers(connection_name) == NOTHING


def test_missing_image_with_pull_never(podman_images: None, connection_name: str) -> None:
    async def run() -> None:
        runtime = PodmanRuntime()
        inv = invocation("ferry-test/does-not-exist:dev", connection=connection_name, pull="never")
        with pytest.raises(ImageUnavailable, match="pull policy is 'never'"):
            await runtime.start(inv, lambda line: None)

    asyncio.run(run())
    assert leftovers(connection_name) == NOTHING


def test_invalid_kubernetes_block_is_a_config_error() -> None:
    """Refused as the connector's options are read, before podman is asked for anything."""
    with pytest.raises(ConfigError, match=r"source\.kubernetes: unknown key `namspace`"):
        invocation(NULL, connection="x", kubernetes={"namspace": "typo"})


def test_gc_removes_pod_secret_and_volume_of_a_dead_owner(
    podman_images: None, connection_name: str
) -> None:
    """A pod whose owner process is gone is garbage; a live owner's pod is kept.

    The "dead" owner is a live `sleep` that only this test's gc is told is gone (`probe`), so a
    `ferry gc` that other processes on this machine run meanwhile leaves the pod alone.
    """
    dead = subprocess.Popen(["sleep", "600"])

    def probe(pid: int) -> int | None:
        return None if pid == dead.pid else process_start(pid)

    def play(owner_pid: int) -> str:
        inv = invocation(
            SIDECAR,
            "read",
            {"config": b"{}", "catalog": b"{}"},
            connection=connection_name,
            entrypoint="sleep 600",
        )
        owner = f"{this_host()}-{owner_pid}-deadbeef"
        manifests = for_podman(
            build_manifests(
                inv,
                token="gc-test-token",
                endpoint=RelayEndpoint(LOOPBACK_HOST, 9),  # nobody listens: the pod just idles
                extra_labels={
                    OWNER_LABEL: owner,
                    HOST_LABEL: this_host(),
                    PID_LABEL: str(owner_pid),
                },
            )
        )
        subprocess.run(
            [
                "podman",
                "secret",
                "create",
                "--label",
                f"ferry.connection={connection_name}",
                "--label",
                "app.kubernetes.io/managed-by=ferry",
                "--label",
                f"{OWNER_LABEL}={owner}",
                "--label",
                f"{PID_LABEL}={owner_pid}",
                manifests.secret_name,
                "-",
            ],
            input=json.dumps(podman_secrets(manifests)[manifests.secret_name]),
            text=True,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["podman", "kube", "play", "-"],
            input=json.dumps(manifests.pod.to_dict()),
            text=True,
            check=True,
            capture_output=True,
        )
        return manifests.name

    try:
        orphan = play(dead.pid)
        kept = play(os.getpid())
        found = leftovers(connection_name)
        assert sorted(found["pods"]) == sorted([orphan, kept])
        assert orphan in found["volumes"]  # podman's copy of the Secret's files

        planned = [
            line for line in collect_podman(dry_run=True, probe=probe) if connection_name in line
        ]
        assert any(
            orphan in line and f"owner process {dead.pid} is gone" in line for line in planned
        )
        assert not any(kept in line for line in planned)
        assert leftovers(connection_name) == found  # a dry run removes nothing

        removed = [
            line for line in collect_podman(dry_run=False, probe=probe) if connection_name in line
        ]
        assert any(line.startswith(f"podman: removed pod {orphan}") for line in removed)
        after = leftovers(connection_name)
        assert after["pods"] == [kept]
        assert orphan not in after["secrets"]
        assert orphan not in after["volumes"]
    finally:
        dead.kill()
        dead.wait()
