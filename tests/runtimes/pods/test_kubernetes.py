"""KubernetesRuntime against a fake API server, and against a real cluster when KUBECONFIG is set.

The fake: kmock 0.8 (a stateful in-memory Kubernetes API on a local port) is the ONLY fake
Kubernetes API in these tests, extended by `kmock_cluster.FakeCluster` (server-set uid and
resourceVersion, selectors, ownerReference GC) and driven by `kmock_cluster.Kubelet`, a
simulated kubelet that PATCHes pod status and speaks to ferry's relay listener the way the relay
and heartbeat sidecars do. lightkube reaches it through a temporary KUBECONFIG, exactly as it
would reach a cluster. The pod layout itself runs for real in tests/runtimes/pods/test_podman.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import kmock
import pytest
from kmock_cluster import FakeCluster, Kubelet, Outcome

from ferry.engine import commands
from ferry.engine.connection import parse_connection
from ferry.engine.runner import SyncOptions, SyncRunner
from ferry.errors import ConfigError, ConnectorCrashed, ImageUnavailable, RuntimeUnavailable
from ferry.runtimes import get_runtime
from ferry.runtimes.base import ConnectorOptions, ConnectorRef
from ferry.runtimes.owner import HOST_LABEL, OWNER_LABEL, PID_LABEL, this_host
from ferry.runtimes.pods.gc import collect_kubernetes
from ferry.runtimes.pods.kubernetes import KubernetesRuntime, assess_pod, relay_host
from ferry.runtimes.pods.manifests import KubernetesSettings
from ferry.store import open_store

NAMESPACE = "ferry-test"
IMAGE = "registry.example/source-mini:1"


# --- a tiny connector, played by the simulated kubelet -------------------------------------------

SPEC = {"type": "SPEC", "spec": {"connectionSpecification": {"type": "object", "properties": {}}}}
CATALOG = {
    "type": "CATALOG",
    "catalog": {
        "streams": [
            {
                "name": "items",
                "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
                "supported_sync_modes": ["full_refresh", "incremental"],
                "source_defined_cursor": True,
                "default_cursor_field": ["id"],
                "source_defined_primary_key": [["id"]],
            }
        ]
    },
}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def state(cursor: int) -> dict[str, Any]:
    return {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": "items"}, "stream_state": {"cursor": cursor}},
        },
    }


class EchoStates:
    """A destination: echoes every STATE line it reads from stdin."""

    def __init__(self) -> None:
        self.pending = b""
        self.records = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        out = b""
        for raw in lines:
            if b'"STATE"' in raw:
                out += raw + b"\n"
            elif b'"RECORD"' in raw:
                self.records += 1
        return out


def verb_of(pod: dict[str, Any]) -> str:
    connector = next(c for c in pod["spec"]["containers"] if c["name"] == "connector")
    return str(connector["command"][4])  # sh -c SCRIPT ferry-wrapper VERB ...


def mini_connector(records: int = 25) -> Any:
    def program(pod: dict[str, Any], files: dict[str, bytes]) -> Outcome:
        verb = verb_of(pod)
        if verb == "spec":
            return Outcome(stdout=line(SPEC), stderr=b"mini: spec\n")
        if verb == "check":
            return Outcome(
                stdout=line(
                    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}}
                )
            )
        if verb == "discover":
            return Outcome(stdout=line(CATALOG))
        if verb == "read":
            start = (
                json.loads(files["state"])[0]["stream"]["stream_state"]["cursor"]
                if "state" in files
                else 0
            )
            out = b"".join(
                line(
                    {
                        "type": "RECORD",
                        "record": {"stream": "items", "data": {"id": i}, "emitted_at": 0},
                    }
                )
                + (line(state(i)) if i % 10 == 0 else b"")
                for i in range(start + 1, records + 1)
            )
            return Outcome(stdout=out + line(state(records)), stderr=b"mini: read done\n")
        if verb == "write":
            return Outcome(on_stdin=EchoStates())
        return Outcome(exit_code=2, stderr=b"unknown verb\n")

    return program


# --- fixtures -----------------------------------------------------------------------------------


def ref(image: str = IMAGE, **options: Any) -> ConnectorRef:
    return ConnectorRef("kubernetes", image, options=ConnectorOptions(**options))


async def settle(kubelet: Kubelet) -> None:
    await asyncio.gather(*(record.done.wait() for record in kubelet.pods))


# --- happy paths --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_check_creates_secret_owned_by_pod_and_deletes_both(cluster: FakeCluster) -> None:
    kubelet = Kubelet(cluster, mini_connector())
    runtime = KubernetesRuntime()
    status = await commands.check(ref(), {"token": "s3cret"}, runtime)
    assert status.status == "SUCCEEDED"
    await settle(kubelet)
    await runtime.close()
    spec_pod, record = kubelet.pods  # check fetches the spec first
    assert spec_pod.files == {}  # no files: no Secret for spec
    assert record.namespace == NAMESPACE  # the kubeconfig context's namespace
    assert json.loads(record.files["config"]) == {"token": "s3cret"}
    pod = next(p for p in cluster.ever("pods") if p["metadata"]["name"] == record.name)
    assert record.secret_owner_uid == pod["metadata"]["uid"]  # owned by the pod: GC'd with it
    assert pod["metadata"]["labels"]["ferry.role"] == "connector"
    assert cluster.live("pods") == []
    assert cluster.live("secrets") == []


@pytest.mark.asyncio
async def test_sync_with_source_and_destination_pods(cluster: FakeCluster, tmp_path: Path) -> None:
    kubelet = Kubelet(cluster, mini_connector(records=25))
    connection = parse_connection(
        {
            "name": "k8s-sync",
            "runtime": "kubernetes",
            "source": {"connector": IMAGE, "config": {}},
            "destination": {
                "connector": "registry.example/dest-mini:1",
                "config": {},
                "kubernetes": {
                    "namespace": "other",
                    "annotations": {"sidecar.istio.io/inject": "false"},
                },
            },
        }
    )
    with open_store(str(tmp_path / "ferry.db")) as store:
        result = await SyncRunner(connection, store, SyncOptions(retries=0)).run()
        assert result.error is None, result.error
        assert result.stats.records_sent == 25
        assert result.stats.states_committed == 3
        saved = store.load_state("k8s-sync").to_messages()
    assert saved[0].stream is not None
    assert saved[0].stream.stream_state == {"cursor": 25}
    await settle(kubelet)
    writer = next(r for r in kubelet.pods if verb_of(r.pod) == "write")
    assert writer.namespace == "other"
    assert writer.stdin.count(b'"RECORD"') == 25  # the records arrived over the stdin relay
    annotations = writer.pod["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"
    assert cluster.live("pods") == []
    assert cluster.live("secrets") == []


# --- failures: fast and clear -------------------------------------------------------------------


FAILURES = [
    (
        Outcome(failure="ErrImagePull"),
        ImageUnavailable,
        "connector image registry.example/source-mini:1 cannot be pulled",
    ),
    (
        Outcome(failure="ErrImagePull", container="relay-stdout"),
        ImageUnavailable,
        "relay-stdout sidecar image",
    ),
    (Outcome(failure="OOMKilled", stdout=line(SPEC)[:10]), ConnectorCrashed, "OOMKilled"),
    (Outcome(failure="Evicted"), ConnectorCrashed, "evicted: The node was low on resource"),
    (Outcome(failure="DeadlineExceeded"), ConnectorCrashed, "DeadlineExceeded"),
    (Outcome(failure="Deleted"), ConnectorCrashed, "was deleted while the connector ran"),
    (Outcome(failure="InitFailed"), ConnectorCrashed, "init container ferry-init failed"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("outcome", "error", "message"), FAILURES, ids=[f[0].failure or "" for f in FAILURES]
)
async def test_pod_failures_are_reported_and_cleaned_up(
    cluster: FakeCluster, outcome: Outcome, error: type[Exception], message: str
) -> None:
    kubelet = Kubelet(cluster, lambda pod, files: outcome)
    runtime = KubernetesRuntime()
    with pytest.raises(error, match=message):
        await asyncio.wait_for(commands.fetch_spec(ref(), runtime), 30)
    await settle(kubelet)
    await runtime.close()
    assert cluster.live("pods") == []
    assert cluster.live("secrets") == []


@pytest.mark.asyncio
async def test_an_unschedulable_pod_fails_at_the_schedule_timeout(cluster: FakeCluster) -> None:
    kubelet = Kubelet(cluster, lambda pod, files: Outcome(failure="Unschedulable"))
    runtime = KubernetesRuntime()
    connector = ref(kubernetes={"schedule_timeout_seconds": 1})
    with pytest.raises(
        RuntimeUnavailable, match=r"not scheduled within 1s .*3 Insufficient memory.*raise kube"
    ):
        await asyncio.wait_for(commands.fetch_spec(connector, runtime), 30)
    await settle(kubelet)
    await runtime.close()
    assert cluster.live("pods") == []


@pytest.mark.asyncio
async def test_the_schedule_timeout_stops_counting_once_the_pod_is_on_a_node(
    cluster: FakeCluster,
) -> None:
    Kubelet(cluster, lambda pod, files: Outcome(stdout=line(SPEC), delay=1.5))
    runtime = KubernetesRuntime()
    connector = ref(kubernetes={"schedule_timeout_seconds": 1})
    spec = await asyncio.wait_for(commands.fetch_spec(connector, runtime), 30)
    assert spec.connectionSpecification
    await runtime.close()


@pytest.mark.asyncio
async def test_nonzero_exit_code_and_stderr_reach_the_error(cluster: FakeCluster) -> None:
    Kubelet(cluster, lambda pod, files: Outcome(exit_code=3, stderr=b"boom: bad config\n"))
    runtime = KubernetesRuntime()
    with pytest.raises(ConnectorCrashed, match=r"(?s)exited with code 3.*boom: bad config"):
        await commands.fetch_spec(ref(), runtime)
    await runtime.close()


@pytest.mark.asyncio
async def test_forbidden_is_explained(cluster: FakeCluster) -> None:
    (
        cluster["post", kmock.resource("", "v1", "pods")]
        << 403
        << {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "message": 'pods is forbidden: User "system:serviceaccount:etl:ferry" cannot create',
            "code": 403,
        }
    )
    runtime = KubernetesRuntime()
    with pytest.raises(RuntimeUnavailable, match="RBAC"):
        await commands.fetch_spec(ref(), runtime)
    await runtime.close()


@pytest.mark.asyncio
async def test_relay_address_is_required(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRY_RELAY_HOST")
    runtime = KubernetesRuntime()
    with pytest.raises(ConfigError, match="relay_host"):
        await commands.fetch_spec(ref(), runtime)
    assert cluster.ever("pods") == []


def test_relay_host_precedence() -> None:
    env = {"FERRY_RELAY_HOST": "ferry.etl.svc", "FERRY_POD_IP": "10.1.2.3"}
    assert relay_host(KubernetesSettings(relay_host="relay.example"), env) == "relay.example"
    assert relay_host(KubernetesSettings(), env) == "ferry.etl.svc"
    assert relay_host(KubernetesSettings(), {"FERRY_POD_IP": "10.1.2.3"}) == "10.1.2.3"
    # A bad address in the environment is the user's input (exit 2), named where it came from.
    for variable in ("FERRY_RELAY_HOST", "FERRY_POD_IP"):
        with pytest.raises(ConfigError, match=f"{variable}: a relay host must be") as caught:
            relay_host(KubernetesSettings(), {variable: "not a host"})
        assert caught.value.exit_code == 2


def test_no_kubeconfig_is_runtime_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("FERRY_RELAY_HOST", "127.0.0.1")

    async def run() -> None:
        runtime = get_runtime("kubernetes")
        with pytest.raises(RuntimeUnavailable, match="KUBECONFIG"):
            await commands.fetch_spec(ref(), runtime)

    asyncio.run(run())


def test_assess_pod_reads_statuses() -> None:
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}
    assert assess_pod(pod).running is False
    pod["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "connector", "state": {"running": {}}}],
    }
    assert assess_pod(pod).running is True
    pod["status"]["containerStatuses"] = [
        {"name": "connector", "state": {"terminated": {"exitCode": 4}}}
    ]
    assert assess_pod(pod).exit_code == 4
    # ferry deleting its own pod is no failure; someone else doing it is.
    running = {
        "metadata": {"name": "p", "deletionTimestamp": "x"},
        "spec": {},
        "status": {"phase": "Running"},
    }
    assert assess_pod(running, deleting=True).error is None
    assert isinstance(assess_pod(running).error, ConnectorCrashed)
    unscheduled = {
        "metadata": {"name": "p"},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes",
                }
            ],
        },
    }
    verdict = assess_pod(unscheduled)
    assert verdict.error is None
    assert verdict.note is not None
    assert "Unschedulable" in verdict.note


# --- gc -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_gc_deletes_pods_and_secrets_of_dead_owners(cluster: FakeCluster) -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    host = this_host()

    def labels(pid: int) -> dict[str, str]:
        return {
            "app.kubernetes.io/managed-by": "ferry",
            "ferry.connection": "gc",
            "ferry.role": "source",
            "ferry.run": "1",
            OWNER_LABEL: f"{host}-{pid}-cafe0001",
            HOST_LABEL: host,
            PID_LABEL: str(pid),
        }

    async def create(kind: str, name: str, pid: int, **extra: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": name, "labels": labels(pid)},
            **extra,
        }
        async with cluster.post(
            f"/api/v1/namespaces/{NAMESPACE}/{kind.lower()}s", json=body
        ) as response:
            assert response.status < 300
            return dict(await response.json())

    orphan = await create("Pod", "ferry-gc-src-read-00000001", dead.pid, spec={"containers": []})
    await create("Pod", "ferry-gc-src-read-00000002", os.getpid(), spec={"containers": []})
    finished_long_ago = await create(
        "Pod",
        "ferry-gc-src-read-00000003",
        os.getpid(),
        spec={"containers": []},
        status={
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "connector",
                    "ready": False,
                    "restartCount": 0,
                    "image": IMAGE,
                    "imageID": "",
                    "state": {"terminated": {"exitCode": 0, "finishedAt": "2020-01-01T00:00:00Z"}},
                }
            ],
        },
    )
    owner_ref = {"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": orphan["metadata"]["uid"]}
    async with cluster.post(
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        json={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "ferry-gc-src-read-00000001",
                "labels": labels(dead.pid),
                "ownerReferences": [owner_ref],
            },
        },
    ) as response:
        assert response.status < 300
    await create("Secret", "ferry-gc-src-read-00000004", dead.pid)  # ferry died before its pod
    await create("Secret", "ferry-gc-src-read-00000002", os.getpid())  # alive, in use

    planned = await asyncio.to_thread(collect_kubernetes, True)
    assert len(cluster.live("pods")) == 3  # dry run
    text = "\n".join(planned)
    assert f"owner process {dead.pid} is gone" in text
    assert "succeeded" in text
    assert "TTL" in text
    assert finished_long_ago["metadata"]["name"] in text
    removed = await asyncio.to_thread(collect_kubernetes, False)
    assert all(line.startswith("kubernetes: deleted") for line in removed), removed
    assert [p["metadata"]["name"] for p in cluster.live("pods")] == ["ferry-gc-src-read-00000002"]
    assert [s["metadata"]["name"] for s in cluster.live("secrets")] == [
        "ferry-gc-src-read-00000002"
    ]


# --- a real cluster -----------------------------------------------------------------------------


@pytest.mark.cluster
def test_real_cluster_spec_and_check() -> None:
    """End to end on the cluster KUBECONFIG points at.

    Needs FERRY_RELAY_HOST (an address of this machine the pods can reach), and images the
    cluster can pull: FERRY_CLUSTER_IMAGE (a connector with AIRBYTE_ENTRYPOINT, default
    airbyte/source-faker:6.2.20) and FERRY_SIDECAR_IMAGE (busybox + socat).
    """
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no real cluster: KUBECONFIG is not set")
    for variable in ("FERRY_RELAY_HOST", "FERRY_SIDECAR_IMAGE"):
        if not os.environ.get(variable):
            pytest.skip(f"{variable} is not set (see the docstring)")
    image = os.environ.get("FERRY_CLUSTER_IMAGE", "airbyte/source-faker:6.2.20")

    async def run() -> None:
        runtime = KubernetesRuntime()
        started = time.monotonic()
        spec = await commands.fetch_spec(ref(image), runtime)
        assert spec.connectionSpecification
        status = await commands.check(ref(image), {"count": 10}, runtime, spec=spec)
        assert status.status == "SUCCEEDED"
        await runtime.close()
        print(f"spec + check on the cluster took {time.monotonic() - started:.1f}s")

    asyncio.run(run())
