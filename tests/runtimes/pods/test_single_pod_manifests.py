"""The single pod's manifests and settings (pure: no pod runs here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.engine.control import Event, apply_stats, error_events, error_of, stats_event
from ferry.engine.runner import check_single_pod
from ferry.engine.stats import SyncStats
from ferry.errors import ConfigError, ConnectorCrashed, ConnectorFailed
from ferry.relay import RelayEndpoint
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef, RunLabels
from ferry.runtimes.options import MANAGED_BY_LABEL, PodLayout, decode
from ferry.runtimes.pods.gc import (
    POD_NAME,
    _Sweep,
    _sweep_podman_secrets,
    _sweep_podman_volumes,
    ttls,
)
from ferry.runtimes.pods.layout import PodPair
from ferry.runtimes.pods.manifests import MANAGED_BY, for_podman, podman_secret_pod, podman_secrets
from ferry.runtimes.pods.single_pod import build_single_pod


def pair(
    layout: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
    connection: str = "conn",
) -> PodPair:
    def invocation(
        image: str, verb: Any, role: Any, options: dict[str, Any]
    ) -> ConnectorInvocation:
        ref = ConnectorRef("podman", image, options=decode(options, ConnectorOptions, "source"))
        files = {"config": b'{"x": "$(not expanded)"}', "catalog": b"{}"}
        return ConnectorInvocation(ref, verb, files, RunLabels("7", connection, role))

    return PodPair(
        invocation("src:1", "read", "source", source or {}),
        invocation("dst:1", "write", "destination", destination or {}),
        PodLayout.parse({"layout": "single-pod", **(layout or {})}),
        RunLabels("7", connection, "connector"),
    )


def build(p: PodPair) -> dict[str, Any]:
    manifests = build_single_pod(p, token="tok", endpoint=RelayEndpoint("10.0.0.1", 4000))
    return {"pod": manifests.pod.to_dict(), "secret": manifests.secret.to_dict()}


def test_one_pod_with_both_connectors_and_the_pump() -> None:
    built = build(
        pair({"ferry_image": "ferry:2", "labels": {"team": "etl"}}, {"resources": {"memory": "1g"}})
    )
    pod = built["pod"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert list(containers) == ["source", "destination", "pump"]  # the pump is the heartbeat
    assert containers["pump"]["image"] == "ferry:2"
    pump_env = {e["name"]: e["value"] for e in containers["pump"]["env"]}
    assert pump_env["FERRY_PUMP_RELAY"] == "10.0.0.1:4000"
    assert pump_env["FERRY_PUMP_HEARTBEAT"] == "3 4 3"  # the heartbeat sidecar's defaults
    assert containers["source"]["resources"]["limits"]["memory"] == "1Gi"
    assert "initContainers" not in pod["spec"]  # the pump and the wrappers make the FIFOs
    for container in pod["spec"]["containers"]:
        assert set(container["resources"]) == {"requests", "limits"}
    env = {e["name"]: e["value"] for e in containers["destination"]["env"]}
    assert env["FERRY_IO_DIR"] == "/ferry/io/destination"
    assert env["FERRY_STDIN"] == "1"
    assert "--config" in containers["source"]["command"]
    assert "/ferry/files/source-config.json" in containers["source"]["command"]
    assert pod["metadata"]["labels"]["team"] == "etl"
    assert pod["spec"]["volumes"][0]["name"] == f"{pod['metadata']['name']}-io"  # unique
    # config values are files, never commands: nothing Kubernetes would rewrite is generated
    assert "$(" not in json.dumps(pod)
    assert "$$" not in json.dumps(pod)
    assert sorted(built["secret"]["data"]) == [
        "destination-catalog.json",
        "destination-config.json",
        "source-catalog.json",
        "source-config.json",
    ]


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def test_every_name_fits_kubernetes_limits_with_a_long_connection_name() -> None:
    """Pod, Secret, containers and volumes (the emptyDir is `<pod>-io`) are DNS labels; the
    podman secrets (`<pod>.<volume>`) DNS subdomains."""
    long = pair(
        source={"volumes": {"/srv/in": "/in"}},
        connection="A_very.Long-connection_name-for-the-warehouse-of-record" * 2,
    )
    manifests = for_podman(build_single_pod(long, token="t", endpoint=RelayEndpoint("h", 1)))
    pod = manifests.pod.to_dict()
    labels = [pod["metadata"]["name"], manifests.secret.to_dict()["metadata"]["name"]]
    labels += [c["name"] for c in pod["spec"]["containers"]]
    labels += [v["name"] for v in pod["spec"]["volumes"]]
    assert f"{manifests.name}-io" in labels
    assert POD_NAME.match(manifests.name)
    for name in labels:
        assert DNS_LABEL.match(name), f"{name!r} ({len(name)} characters) is not a DNS label"
    for name in podman_secrets(manifests):
        assert DNS_SUBDOMAIN.match(name), name


def test_each_container_mounts_only_its_own_secret_keys() -> None:
    """The source cannot read the destination's config, nor the reverse; the pump only the catalog."""
    pod = build(pair())["pod"]
    secret_name = pod["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def visible(container: dict[str, Any]) -> dict[str, str]:
        """File path -> Secret key, for every file of the Secret this container mounts."""
        seen: dict[str, str] = {}
        for mount in container["volumeMounts"]:
            secret = volumes[mount["name"]].get("secret")
            if secret is None:
                continue
            assert secret["secretName"] == secret_name  # one Secret for the whole pod
            assert mount["readOnly"] is True
            for item in secret["items"]:  # without items, every key would be mounted
                seen[f"{mount['mountPath']}/{item['path']}"] = item["key"]
        return seen

    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    for role in ("source", "destination"):
        files = visible(containers[role])
        assert files == {
            f"/ferry/files/{role}-config.json": f"{role}-config.json",
            f"/ferry/files/{role}-catalog.json": f"{role}-catalog.json",
        }
        assert all(path in containers[role]["command"] for path in files)  # the arguments' paths
    pump = containers["pump"]
    catalog = {e["name"]: e["value"] for e in pump["env"]}["FERRY_PUMP_CATALOG"]
    assert visible(pump) == {catalog: "source-catalog.json"}


def test_on_podman_each_secret_volume_reads_a_podman_secret_of_its_own() -> None:
    """Podman 4.3 writes every volume of one secret into one podman volume (all keys together):
    for podman, each volume's keys go in a secret of their own, `<pod>.<volume>`."""
    manifests = for_podman(build_single_pod(pair(), token="t", endpoint=RelayEndpoint("h", 1)))
    secrets = podman_secrets(manifests)
    pod = manifests.name
    assert {name: sorted(doc["data"]) for name, doc in secrets.items()} == {
        f"{pod}.source-files": ["source-catalog.json", "source-config.json"],
        f"{pod}.destination-files": ["destination-catalog.json", "destination-config.json"],
        f"{pod}.pump-files": ["source-catalog.json"],
    }
    assert secrets[f"{pod}.source-files"]["data"]["source-config.json"] == (
        '{"x": "$(not expanded)"}'  # plain, not base64
    )
    assert {podman_secret_pod(name) for name in secrets} == {pod}  # ferry gc finds the pod


def test_gc_keeps_the_per_container_podman_secrets_of_a_running_pod() -> None:
    """`ferry gc` on podman (its secret sweep, on listings written here: nothing is removed, a
    dry run) keeps an old `<pod>.<volume>` secret while its pod exists, sweeps it with its pod."""
    pod = "ferry-conn-pod-0123abcd"
    old: list[Mapping[str, Any]] = [
        {
            "Spec": {"Name": f"{pod}.{volume}", "Labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "CreatedAt": 1.0,  # far older than the TTL of a secret without its pod
        }
        for volume in ("source-files", "destination-files", "pump-files")
    ]

    def planned(seen: set[str], doomed: set[str]) -> list[str]:
        sweep = _Sweep("podman", "remove", True, time.time(), ttls(), lambda pid: pid)
        sweep.seen, sweep.doomed = seen, doomed
        _sweep_podman_secrets(sweep, old)
        return sweep.lines

    assert planned({pod}, set()) == []
    assert len(planned(set(), {pod})) == 3  # its pod is being removed
    assert len(planned(set(), set())) == 3  # no pod uses them, and they are old


def test_gc_sweeps_the_volumes_a_gone_single_pod_left() -> None:
    """`ferry gc` on podman (its volume sweep, on listings written here, a dry run): a single
    pod's emptyDir and its secrets' file volumes stay while the pod runs and go once it and its
    secrets are gone."""
    pod = "ferry-conn-pod-0123abcd"
    assert POD_NAME.match(pod)
    names = [f"{pod}-io", f"{pod}.source-files", f"{pod}.destination-files", "someone-else"]
    secrets = {f"{pod}.source-files", f"{pod}.destination-files"}

    def planned(seen: set[str], secret_names: set[str]) -> list[str]:
        sweep = _Sweep("podman", "remove", True, time.time(), ttls(), lambda pid: pid)
        sweep.seen = seen
        _sweep_podman_volumes(sweep, [{"Name": name} for name in names], secret_names)
        return sweep.lines

    assert planned({pod}, secrets) == []
    assert planned({pod}, set()) == []  # the pod still runs
    assert len(planned(set(), secrets)) == 1  # its emptyDir; the secrets' sweep takes theirs
    swept = planned(set(), set())
    assert len(swept) == 3
    assert not any("someone-else" in line for line in swept)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: PodLayout.parse({"layout": "one-pod"}), "is not one of pod-per-connector"),
        (
            lambda: PodLayout.parse({"layout": "single-pod", "nope": 1}),
            "kubernetes: unknown key `nope`",
        ),
        (lambda: build(pair(source={"kubernetes": {"namespace": "x"}})), "connection's kubernetes"),
        (
            lambda: check_single_pod(ConnectorRef("local", "x"), ConnectorRef("podman", "y")),
            "both connectors on podman or both on kubernetes",
        ),
    ],
)
def test_bad_settings_are_config_errors(make: Any, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    assert says in str(caught.value)


def test_control_events_carry_counts_and_errors() -> None:
    pod = SyncStats()
    stream = pod.stream("users", None)
    stream.records_sent, stream.states_sent, stream.records_committed = 10, 2, 99
    pod.mismatches.append("source said 3")
    here = SyncStats()
    here.stream("users", None).records_committed = 1
    apply_stats(stats_event(pod), here)
    assert here.stream("users", None).records_sent == 10
    assert here.stream("users", None).records_committed == 1  # the launching ferry's own count
    assert here.mismatches == ["source said 3"]
    failed, crashed = error_events(
        [
            ("source", ConnectorFailed("bad config", failure_type="config_error")),
            ("destination", ConnectorCrashed("exited 3", exit_code=3)),
        ]
    )
    again = error_of(failed)
    assert isinstance(again, ConnectorFailed)
    assert again.failure_type == "config_error"
    assert isinstance(error_of(crashed), ConnectorCrashed)
    assert isinstance(error_of(Event("error", kind="NotAnError", text="x")), ConnectorCrashed)


@pytest.mark.parametrize("runtime", ["podman", "kubernetes"])
def test_dry_run_prints_the_single_pod(tmp_path: Path, runtime: str) -> None:
    connection = tmp_path / "connection.yaml"
    body = {
        "name": "dry",
        "runtime": runtime,
        "source": {"connector": "src:1", "config": {"password": "hunter2"}},
        "destination": {"connector": "dst:1", "config": {}},
    }
    connection.write_text(json.dumps(body))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry",
            "sync",
            str(connection),
            "--dry-run",
            "--layout",
            "single-pod",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    secret, pod = list(yaml.safe_load_all(result.stdout))
    assert [c["name"] for c in pod["spec"]["containers"]] == [
        "source",
        "destination",
        "pump",
    ]
    assert pod["spec"].get("hostNetwork") is (True if runtime == "podman" else None)
    assert "hunter2" not in result.stdout
    assert json.dumps(secret).count("<redacted>") == 4
