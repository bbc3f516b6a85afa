"""The single-pod layout's Kubernetes API calls, against kmock (no cluster can run here).

kmock (via `kmock_cluster.FakeCluster`) is the only fake: the simulated kubelet plays the pump
container by speaking the control stream over ferry's real relay listener with the pod's token;
everything else is the real engine, runtime and store. The pod itself runs for real with podman
in test_single_pod_podman.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kmock_cluster import FakeCluster, Kubelet, Outcome

from ferry.engine.connection import parse_connection
from ferry.engine.control import Event, encode_event, state_event
from ferry.engine.runner import SyncOptions, SyncResult, SyncRunner
from ferry.errors import ConnectorCrashed, ImageUnavailable
from ferry.store import open_store
from runtimes.pods.test_kubernetes import IMAGE, line, mini_connector, state

DESTINATION = "registry.example/dest-mini:1"


def control_stream(records: int) -> bytes:
    """What the pump sends for `records` records of `items` with states at 10, 20, ... records:
    each state, then the destination's echo of it."""
    events: list[Event] = []
    cursors = [*range(10, records + 1, 10), records]
    for previous, cursor in zip([0, *cursors], cursors, strict=False):
        sent = line(state(cursor)).rstrip(b"\n")
        envelope = json.loads(sent)["state"]
        payload = json.dumps(envelope).encode()
        totals: dict[tuple[str, str | None], tuple[int, int]] = {
            ("items", None): (cursor, 100 * cursor)
        }
        events.append(state_event("state", payload, cursor - previous, totals))
        events.append(state_event("echo", payload))
    stats = {
        "name": "items",
        "namespace": None,
        "records_sent": records,
        "bytes_sent": 100 * records,
    }
    events += [Event("stats", streams=[stats]), Event("end", cancelled=False)]
    return b"".join(map(encode_event, events))


def single_pod(outcome: Outcome) -> Any:
    """Per-connector pods for spec and discover, `outcome` for the single pod."""
    connector = mini_connector()

    def program(pod: dict[str, Any], files: dict[str, bytes]) -> Outcome:
        names = [c["name"] for c in pod["spec"]["containers"]]
        return outcome if "pump" in names else connector(pod, files)

    return program


async def sync(tmp_path: Path, **kubernetes: Any) -> SyncResult:
    connection = parse_connection(
        {
            "name": "k8s-single",
            "runtime": "kubernetes",
            "kubernetes": {"layout": "single-pod", **kubernetes},
            "source": {"connector": IMAGE, "config": {"a": 1}},
            "destination": {
                "connector": DESTINATION,
                "config": {"b": 2},
                "kubernetes": {"resources": {"limits": {"memory": "1Gi"}}},
            },
        }
    )
    with open_store(str(tmp_path / "ferry.db")) as store:
        return await SyncRunner(connection, store, SyncOptions(retries=0)).run()


@pytest.mark.asyncio
async def test_one_pod_one_secret_commits_on_echoes(cluster: FakeCluster, tmp_path: Path) -> None:
    kubelet = Kubelet(cluster, single_pod(Outcome(stdout=control_stream(25))))
    result = await sync(tmp_path, node_selector={"pool": "etl"})
    assert result.error is None, result.error
    assert result.stats.records_sent == 25
    assert result.stats.records_committed == 25  # the totals the pump sent with each state
    assert result.stats.states_committed == 3
    with open_store(str(tmp_path / "ferry.db")) as store:
        saved = store.load_state("k8s-single").to_messages()
    assert saved[0].stream is not None
    assert saved[0].stream.stream_state == {"cursor": 25}
    record = kubelet.pods[-1]
    pod = record.pod
    assert [c["name"] for c in pod["spec"]["containers"]] == [
        "source",
        "destination",
        "pump",
    ]
    assert pod["spec"]["nodeSelector"] == {"pool": "etl"}
    assert "initContainers" not in pod["spec"]  # the pump and the wrappers make the FIFOs
    for container in pod["spec"]["containers"]:
        assert set(container["resources"]) == {"requests", "limits"}, container["name"]
    destination = pod["spec"]["containers"][1]
    assert destination["resources"]["limits"]["memory"] == "1Gi"
    assert json.loads(record.files["source-config"]) == {"a": 1}
    assert json.loads(record.files["destination-config"]) == {"b": 2}
    assert record.secret_owner_uid == pod["metadata"]["uid"]  # owned by the pod
    assert cluster.live("pods") == []
    assert cluster.live("secrets") == []


@pytest.mark.parametrize(
    ("outcome", "error", "says"),
    [
        (
            Outcome(failure="ErrImagePull", container="destination"),
            ImageUnavailable,
            "the destination container image registry.example/dest-mini:1 cannot be pulled",
        ),
        (
            Outcome(failure="OOMKilled", container="destination"),
            ConnectorCrashed,
            "the destination container was OOMKilled; raise destination.resources.memory",
        ),
        (Outcome(failure="Evicted"), ConnectorCrashed, "evicted"),
        (
            Outcome(stdout=control_stream(5).split(b"\n")[0] + b"\n", exit_code=1),
            ConnectorCrashed,
            "the pump container exited with code 1 before the sync ended",
        ),
    ],
    ids=["pull", "oom", "evicted", "pump-crash"],
)
@pytest.mark.asyncio
async def test_failures_name_the_container(
    cluster: FakeCluster, tmp_path: Path, outcome: Outcome, error: type, says: str
) -> None:
    Kubelet(cluster, single_pod(outcome))
    result = await sync(tmp_path)
    assert isinstance(result.error, error), result.error
    assert says in str(result.error)
    assert cluster.live("pods") == []
    assert cluster.live("secrets") == []
