"""deploy/: every YAML document is a valid Kubernetes object (lightkube's models) and the pieces
fit together: RBAC grants what the Kubernetes runtime and `ferry gc` call, ferry's pod learns its
IP from the downward API, the connection file parses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import codecs

from ferry.engine.connection import parse_connection
from ferry.runtimes.options import KubernetesSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FILES = sorted(DEPLOY.glob("*.yaml"))

# What ferry calls: runtimes/pods/kubernetes.py (create, watch, delete pods; create, patch, get and
# delete Secrets) and runtimes/pods/gc.py (list and delete both).
NEEDED = {
    "pods": {"create", "get", "list", "watch", "delete"},
    "secrets": {"create", "get", "list", "patch", "delete"},
}


def documents() -> list[dict[str, Any]]:
    return [doc for path in FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for doc in documents()}
    assert kinds >= {"ServiceAccount", "Role", "RoleBinding", "Job", "CronJob", "ConfigMap"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_document_loads_with_lightkube(path: Path) -> None:
    objects = codecs.load_all_yaml(path.read_text())
    raw = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert len(objects) == len(raw)
    for obj, doc in zip(objects, raw, strict=True):
        as_dict: Callable[[], dict[str, Any]] = obj.to_dict  # generic resources are untyped
        assert as_dict() == doc, f"{path.name}: a field lightkube does not know was dropped"
        assert obj.metadata is not None
        assert obj.metadata.namespace == "ferry"


def test_role_grants_what_ferry_calls_and_no_more() -> None:
    (role,) = by_kind("Role")
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted == NEEDED
    (binding,) = by_kind("RoleBinding")
    (account,) = by_kind("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]


def pod_specs() -> list[dict[str, Any]]:
    specs = [job["spec"]["template"]["spec"] for job in by_kind("Job")]
    specs += [
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"] for cron in by_kind("CronJob")
    ]
    return specs


def test_ferry_pods_know_their_ip_and_relay_port() -> None:
    (account,) = by_kind("ServiceAccount")
    (policy,) = by_kind("NetworkPolicy")
    allowed_port = policy["spec"]["ingress"][0]["ports"][0]["port"]
    for spec in pod_specs():
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["restartPolicy"] == "Never"
        ferry = next(c for c in spec["containers"] if c["name"] == "ferry")
        env = {e["name"]: e for e in ferry["env"]}
        assert env["FERRY_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        port = int(env["FERRY_RELAY_PORT"]["value"])
        assert port == allowed_port
        assert {"name": "relay", "containerPort": port, "protocol": "TCP"} in ferry["ports"]
        for container in spec["containers"] + spec.get("initContainers", []):
            assert set(container["resources"]) == {"requests", "limits"}


def test_cronjob_never_runs_two_syncs_at_once() -> None:
    (cron,) = by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (job,) = by_kind("Job")
    assert cron["spec"]["jobTemplate"]["spec"] == job["spec"]


def test_the_connection_file_parses() -> None:
    (config_map,) = by_kind("ConfigMap")
    connection = parse_connection(yaml.safe_load(config_map["data"]["connection.yaml"]))
    assert connection.runtime == "kubernetes"
    for endpoint in (connection.source, connection.destination):  # checked as it was read
        assert isinstance(endpoint.options.kubernetes, KubernetesSettings)


def test_every_sync_pod_shares_the_postgres_store_from_a_secret() -> None:
    (secret,) = by_kind("Secret")
    assert secret["stringData"]["url"].startswith("postgresql://")
    for spec in pod_specs():
        ferry = next(c for c in spec["containers"] if c["name"] == "ferry")
        env = {e["name"]: e for e in ferry["env"]}
        ref = env["FERRY_STATE_DB"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "url")
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert "FERRY_STATE_DB" not in " ".join(ferry["command"])
        # No ReadWriteOnce volume ties the Jobs to one node any more.
        assert all("persistentVolumeClaim" not in volume for volume in spec["volumes"])
