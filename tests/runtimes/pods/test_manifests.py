"""The pod manifest builder (pure) and the pure parts of pod gc, tested on their output."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lightkube import codecs
from lightkube.models.core_v1 import Pod, Secret

from ferry.errors import ConfigError
from ferry.relay import RelayEndpoint, unsafe_for_kubernetes
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef, RunLabels
from ferry.runtimes.options import KubernetesSettings, cpu_quantity, decode, memory_quantity
from ferry.runtimes.owner import HOST_LABEL, OWNER_LABEL, PID_LABEL
from ferry.runtimes.pods.gc import POD_NAME, _k8s_phase, _podman_phase, garbage_reason
from ferry.runtimes.pods.manifests import (
    FILES_DIR,
    PodManifests,
    build_manifests,
    for_podman,
    label_value,
    labels_for_gc,
    pod_name,
    podman_secrets,
    render_dry_run,
    secret_owner_patch,
)
from ferry.runtimes.pods.podman import played_pod_id

ENDPOINT = RelayEndpoint("10.0.0.7", 41234)
TOKEN = "tok-en_123"
CONFIG = b'{"password": "hunter2", "path": "/local/x.duckdb"}'


def invocation(
    verb: Any = "read",
    files: dict[str, bytes] | None = None,
    role: Any = "source",
    connection: str = "faker-to-duckdb",
    **options: Any,
) -> ConnectorInvocation:
    ref = ConnectorRef(
        "kubernetes",
        "airbyte/source-faker:6.2.20",
        options=decode(options, ConnectorOptions, "source"),
    )
    if files is None:
        files = {"config": CONFIG, "catalog": b'{"streams": []}'}
    return ConnectorInvocation(ref, verb, files, RunLabels("42", connection, role))


def build(inv: ConnectorInvocation | None = None, **kw: Any) -> PodManifests:
    return build_manifests(
        inv or invocation(), token=TOKEN, endpoint=ENDPOINT, suffix="0123abcd", **kw
    )


def containers(manifests: PodManifests) -> dict[str, dict[str, Any]]:
    spec = manifests.pod.to_dict()["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# --- the pod ------------------------------------------------------------------------------------


def test_source_pod_layout() -> None:
    m = build()
    pod = m.pod.to_dict()
    assert m.name == "ferry-faker-to-duckdb-src-read-0123abcd"
    assert pod["spec"]["restartPolicy"] == "Never"
    by_name = containers(m)
    assert list(by_name) == ["ferry-init", "connector", "relay-stdout", "relay-stderr", "heartbeat"]
    connector = by_name["connector"]
    assert connector["image"] == "airbyte/source-faker:6.2.20"
    # The wrapper runs with the protocol arguments as positional parameters.
    assert connector["command"][:2] == ["/bin/sh", "-c"]
    assert connector["command"][3:] == [
        "ferry-wrapper",
        "read",
        "--config",
        f"{FILES_DIR}/config.json",
        "--catalog",
        f"{FILES_DIR}/catalog.json",
    ]
    env = {e["name"]: e["value"] for e in connector["env"]}
    assert env["FERRY_STDIN"] == "0"
    assert "FERRY_ENTRYPOINT_OVERRIDE" not in env
    # Relays carry the token and ferry's endpoint.
    relay = by_name["relay-stdout"]["command"]
    assert relay[3:9] == ["ferry-relay", "stdout", "/ferry/io", "10.0.0.7", "41234", TOKEN]
    # Every container mounts the pod's own emptyDir; only the connector gets the files.
    io_volume = m.io_volume
    assert io_volume == f"{m.name}-io"
    for container in by_name.values():
        assert {"name": io_volume, "mountPath": "/ferry/io"} in container["volumeMounts"]
    files_mount = {"name": f"{m.name}-files", "mountPath": FILES_DIR, "readOnly": True}
    assert files_mount in connector["volumeMounts"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[io_volume] == {"name": io_volume, "emptyDir": {}}
    assert volumes[f"{m.name}-files"]["secret"] == {
        "secretName": m.name,
        "defaultMode": 0o444,
        "optional": False,
    }


def test_destination_gets_a_stdin_relay_and_fifo() -> None:
    m = build(invocation("write", role="destination"))
    by_name = containers(m)
    assert "relay-stdin" in by_name
    assert "stdin" in by_name["ferry-init"]["command"][2]
    env = {e["name"]: e["value"] for e in by_name["connector"]["env"]}
    assert env["FERRY_STDIN"] == "1"
    assert m.name.startswith("ferry-faker-to-duckdb-dst-write-")


def test_init_container_makes_fifos_writable_for_any_user() -> None:
    script = containers(build())["ferry-init"]["command"][2]
    assert "umask 0" in script
    assert "chmod 0777 ." in script
    assert 'mkfifo -m 666 "$f"' in script


def test_no_dollar_paren_or_double_dollar_anywhere() -> None:
    for inv in (invocation(), invocation("write", role="destination"), invocation("spec", {})):
        m = build(inv, entrypoint="python -c 'import os; print(os.environ[\"$HOME\"])'")
        offenders = [s for s in strings(m.pod) if unsafe_for_kubernetes(s)]
        assert offenders == []


def test_user_env_with_dollar_paren_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\$\("):
        build(invocation(env={"X": "$(whoami)"}))
    with pytest.raises(ConfigError, match="not a valid environment variable"):
        build(invocation(env={"1X": "y"}))


def test_ferry_env_wins_over_user_env() -> None:
    m = build(invocation(env={"FERRY_STDIN": "1", "LOG_LEVEL": "debug"}))
    env = containers(m)["connector"]["env"]
    assert [e for e in env if e["name"] == "FERRY_STDIN"] == [{"name": "FERRY_STDIN", "value": "0"}]
    assert {"name": "LOG_LEVEL", "value": "debug"} in env


def test_labels_annotations_and_owner() -> None:
    m = build(
        extra_labels={HOST_LABEL: "node-1", PID_LABEL: "99"},
        settings=KubernetesSettings(
            labels={"team": "data"}, annotations={"sidecar.istio.io/inject": "false"}
        ),
    )
    labels = m.pod.to_dict()["metadata"]["labels"]
    assert labels["ferry.run"] == "42"
    assert labels["ferry.connection"] == "faker-to-duckdb"
    assert labels["ferry.role"] == "source"
    assert labels[OWNER_LABEL]
    assert labels[HOST_LABEL] == "node-1"
    assert labels["team"] == "data"
    assert labels["app.kubernetes.io/managed-by"] == "ferry"
    annotations = m.pod.to_dict()["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"
    assert annotations["ferry.dev/ferry.pid"] == "99"
    assert m.secret.to_dict()["metadata"]["labels"] == labels


def test_long_owner_values_are_valid_labels_and_kept_whole_in_annotations() -> None:
    owner = "a-very-long-host-name.with.dots.example.internal.corp.example.com-12345-deadbeef"
    m = build(extra_labels={OWNER_LABEL: owner})
    label = m.pod.to_dict()["metadata"]["labels"][OWNER_LABEL]
    assert len(label) <= 63
    assert label.endswith("12345-deadbeef")
    merged = labels_for_gc(
        m.pod.to_dict()["metadata"]["labels"], m.pod.to_dict()["metadata"]["annotations"]
    )
    assert merged[OWNER_LABEL] == owner


def test_requests_and_limits_on_every_container() -> None:
    m = build()
    for name, container in containers(m).items():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, (name, kind)


def test_resource_options() -> None:
    inv = invocation(resources={"memory": "1g", "cpu": "0.5"})
    settings = KubernetesSettings.parse(
        {
            "resources": {"requests": {"cpu": "100m"}},
            "sidecar_resources": {"limits": {"cpu": 2, "memory": "256Mi"}},
        }
    )
    by_name = containers(build(inv, settings=settings))
    assert by_name["connector"]["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }
    assert by_name["relay-stdout"]["resources"]["limits"] == {"cpu": "2", "memory": "256Mi"}
    assert by_name["heartbeat"]["resources"]["limits"]["cpu"] == "100m"


def test_scheduling_and_security_settings() -> None:
    settings = KubernetesSettings.parse(
        {
            "namespace": "etl",
            "node_selector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "image_pull_secrets": ["regcred"],
            "service_account_name": "connector",
            "security_context": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
            "container_security_context": {"allowPrivilegeEscalation": False},
            "active_deadline_seconds": 3600,
            "priority_class_name": "batch-low",
        }
    )
    m = build(settings=settings)
    spec = m.pod.to_dict()["spec"]
    assert m.namespace == "etl"
    assert m.pod.to_dict()["metadata"]["namespace"] == "etl"
    assert spec["nodeSelector"] == {"pool": "batch"}
    assert spec["tolerations"][0]["key"] == "batch"
    assert spec["affinity"]["nodeAffinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "connector"
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["priorityClassName"] == "batch-low"
    for container in containers(m).values():
        assert container["securityContext"] == {"allowPrivilegeEscalation": False}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"namspace": "x"}, "unknown key"),
        ({"namespace": "Not_Valid"}, "not a valid namespace"),
        ({"tolerations": [{"key": "a", "operatr": "Exists"}]}, r"tolerations\[0\]\.operatr"),
        ({"affinity": {"nodeAffinity": {"bogus": 1}}}, r"affinity\.nodeAffinity\.bogus"),
        ({"security_context": {"runAsUser": "root"}}, "PodSecurityContext"),
        ({"resources": {"requests": {"gpu": 1}}}, "unknown resource"),
        ({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}, "above"),
        ({"labels": {"ferry.run": "x"}}, "reserved"),
        ({"active_deadline_seconds": 0}, ">= 1"),
        ({"relay_host": "a b"}, "relay host"),
        ({"host_network": "yes"}, "true or false"),
        ("namespace: x", "expected a mapping"),
    ],
)
def test_settings_are_validated_strictly(block: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KubernetesSettings.parse(block)


def test_quantities() -> None:
    assert memory_quantity("512m") == "512Mi"  # ferry's (Docker's) m is MiB, never millibytes
    assert memory_quantity("1g") == "1Gi"
    assert memory_quantity("1.5Gi") == "1536Mi"
    assert memory_quantity(2097152) == "2Mi"
    assert cpu_quantity("0.5") == "500m"
    assert cpu_quantity("2") == "2"
    assert cpu_quantity("250m") == "250m"
    with pytest.raises(ConfigError):
        memory_quantity("12 parsecs")
    with pytest.raises(ConfigError):
        cpu_quantity("-1")


def test_pull_policy_entrypoint_and_host_volumes() -> None:
    inv = invocation(
        pull="always", entrypoint="python /app/main.py", volumes={"/srv/data": "/local"}
    )
    m = build(inv)
    connector = containers(m)["connector"]
    assert connector["imagePullPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in connector["env"]}
    assert env["FERRY_ENTRYPOINT_OVERRIDE"] == "python /app/main.py"
    assert {"name": "ferry-host-0", "mountPath": "/local"} in connector["volumeMounts"]
    host = next(v for v in m.pod.to_dict()["spec"]["volumes"] if v["name"] == "ferry-host-0")
    assert host["hostPath"] == {"path": "/srv/data", "type": "DirectoryOrCreate"}
    # `entrypoint: auto` is resolved by the runtime, never passed through literally.
    auto = containers(build(invocation(entrypoint="auto")))["connector"]
    assert "FERRY_ENTRYPOINT_OVERRIDE" not in {e["name"] for e in auto["env"]}


def test_names_are_dns_labels_and_unique() -> None:
    long = invocation(connection="A_very.Long-connection_name" * 3)
    name = pod_name(long)
    assert len(name) <= 63
    assert POD_NAME.match(name)
    volumes = [v["name"] for v in build(long).pod.to_dict()["spec"]["volumes"]]
    assert len(volumes) >= 2  # its emptyDir (`<pod>-io`) and Secret (`<pod>-files`) volumes
    assert all(len(volume) <= 63 for volume in volumes), volumes
    assert pod_name(long) != pod_name(long)
    assert label_value("x" * 100 + "-end") == "x" * 59 + "-end"


# --- the secret ---------------------------------------------------------------------------------


def test_secret_holds_files_and_is_owned_after_creation() -> None:
    m = build(invocation(files={"config": CONFIG, "catalog": b"{}", "state": b"[]"}))
    data = m.secret.to_dict()["data"]
    assert base64.b64decode(data["config.json"]) == CONFIG
    assert set(data) == {"config.json", "catalog.json", "state.json"}
    assert m.secret.to_dict()["metadata"]["name"] == m.name
    assert m.secret.to_dict()["immutable"] is True
    patch = secret_owner_patch(m.name, "uid-1").to_dict()
    (owner,) = patch["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": m.name,
        "uid": "uid-1",
        "controller": False,
        "blockOwnerDeletion": False,
    }
    connector = containers(m)["connector"]["command"]
    assert f"{FILES_DIR}/state.json" in connector


def test_spec_has_no_secret_volume() -> None:
    m = build(invocation("spec", {}))
    assert m.secret.to_dict()["data"] == {}
    assert [v["name"] for v in m.pod.to_dict()["spec"]["volumes"]] == [m.io_volume]


def test_manifests_are_valid_kubernetes_objects() -> None:
    """lightkube's models accept every field (an unknown one would be dropped in the round trip)."""
    m = build(
        invocation("write", role="destination", volumes={"/d": "/local"}),
        settings=KubernetesSettings.parse({"tolerations": [{"key": "k", "operator": "Exists"}]}),
    )
    pod, secret = m.pod.to_dict(), m.secret.to_dict()
    assert Pod.from_dict(pod).to_dict() == pod
    assert Secret.from_dict(secret).to_dict() == secret
    metadata = codecs.from_dict(pod).metadata
    assert metadata is not None
    assert metadata.name == m.name


# --- podman -------------------------------------------------------------------------------------


def test_podman_adaptation() -> None:
    m = for_podman(build())
    assert m.pod.to_dict()["spec"]["hostNetwork"] is True
    assert "namespace" not in m.pod.to_dict()["metadata"]
    bridged = for_podman(build(), host_network=False)
    assert "hostNetwork" not in bridged.pod.to_dict()["spec"]
    secrets = podman_secrets(m)
    assert list(secrets) == [m.name]  # one secret, named like the pod
    secret = secrets[m.name]
    assert secret["data"]["config.json"] == CONFIG.decode()  # plain, not base64
    assert secret["metadata"]["name"] == m.name


# --- dry run ------------------------------------------------------------------------------------


def test_dry_run_redacts_secret_values() -> None:
    inv = invocation(env={"API_TOKEN": "t0ps3cret"}, kubernetes={"namespace": "etl"})
    text = render_dry_run([inv, invocation("write", role="destination")])
    assert "hunter2" not in text
    assert base64.b64encode(CONFIG).decode() not in text
    assert "t0ps3cret" not in text
    documents = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in documents] == ["Secret", "Pod", "Secret", "Pod"]
    assert documents[0]["data"]["config.json"].startswith("<redacted>")
    assert documents[1]["metadata"]["namespace"] == "etl"
    assert len(codecs.load_all_yaml(text)) == 4
    podman_text = render_dry_run([inv], runtime="podman")
    assert "hostNetwork: true" in podman_text


def test_the_kubernetes_block_is_validated_when_the_options_are_read() -> None:
    with pytest.raises(ConfigError, match=r"source\.kubernetes: unknown key"):
        render_dry_run([invocation(kubernetes={"nodeSelector": {}})])


# --- gc decisions -------------------------------------------------------------------------------

NOW = 1_800_000_000.0
TTL = {"Succeeded": 3600.0, "Failed": 86400.0, "Pending": 3600.0}


def owned(pid: int, host: str = "here") -> dict[str, str]:
    return {OWNER_LABEL: f"{host}-{pid}-abcd", HOST_LABEL: host, PID_LABEL: str(pid)}


def test_garbage_reason() -> None:
    def alive(pid: int) -> int | None:
        return 1 if pid == 1 else None

    kw: dict[str, Any] = {"now": NOW, "ttl": TTL, "host": "here", "probe": alive}
    assert garbage_reason(owned(1), phase=None, finished_at=None, **kw) is None
    dead = garbage_reason(owned(2), phase=None, finished_at=None, **kw)
    assert dead == "owner process 2 is gone"
    # Another host: only finished pods are ours to remove.
    assert garbage_reason(owned(2, "there"), phase=None, finished_at=None, **kw) is None
    assert garbage_reason(owned(2, "there"), phase="Failed", finished_at=NOW, **kw)
    # A live owner's finished pod goes after its phase's TTL.
    assert garbage_reason(owned(1), phase="Succeeded", finished_at=NOW - 60, **kw) is None
    reason = garbage_reason(owned(1), phase="Succeeded", finished_at=NOW - 7200, **kw)
    assert reason == "succeeded 7200s ago (TTL 3600s)"
    assert garbage_reason(owned(1), phase="Failed", finished_at=NOW - 7200, **kw) is None


def test_podman_phase() -> None:
    exited = {"Names": ["p-connector"], "State": "exited", "ExitCode": 3, "ExitedAt": 1795705460}
    assert _podman_phase("p", "Degraded", [exited]) == ("Failed", 1795705460.0)
    ok = {**exited, "ExitCode": 0}
    assert _podman_phase("p", "Exited", [ok])[0] == "Succeeded"
    running = {"Names": ["p-connector"], "State": "running"}
    assert _podman_phase("p", "Running", [running]) == (None, None)


def test_k8s_phase() -> None:
    pod = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "connector",
                    "state": {"terminated": {"exitCode": 0, "finishedAt": "2027-01-15T08:00:00Z"}},
                }
            ],
        }
    }
    phase, finished = _k8s_phase(pod)
    assert phase == "Succeeded"
    assert finished == pytest.approx(1800000000.0, abs=86400 * 400)
    assert _k8s_phase({"status": {"phase": "Running"}}) == (None, None)


def test_the_pod_id_in_kube_plays_output() -> None:
    """`podman kube play` (podman 4.3) prints the pod's id, then its containers' ids; the
    conmon lookup names the infra container after it."""
    pod_id = "456dd06f0e4f0e3bad20aa67bc3e09dc4bc223be55ed5b482a1f9f2615a0cb8d"
    container = "dbc2e4d4535bcd3d8e9546346c3d50b28fa4406b8c73ae3bd6108a6bd30254f9"
    assert played_pod_id(f"Pod:\n{pod_id}\nContainer:\n{container}\n\n") == pod_id
    assert played_pod_id(f"a warning\nPod:\n{pod_id}\n") == pod_id
    assert played_pod_id(f"Container:\n{container}\n") is None
    assert played_pod_id("Pod:\nnot-an-id\n") is None
    assert played_pod_id("") is None
