"""What the podman tests share: the built images' names, podman calls, a connection's leftovers.

The fixtures `podman_images` and `connection_name` live in conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ferry.relay import HeartbeatSettings
from ferry.store import open_store

FAKER = "ferry-test/source-faker:dev"
DUCKDB = "ferry-test/destination-duckdb:dev"
GENERATOR = "ferry-test/source-generator:dev"
NULL = "ferry-test/destination-null:dev"
NO_ENTRYPOINT = "ferry-test/no-entrypoint:dev"
SIDECAR = "ferry-test/sidecar:dev"
FERRY = "ferry-test/ferry:dev"  # FERRY_IMAGE: the single pod's pump


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=300, check=check
    )


def pods_of(connection: str) -> list[dict[str, Any]]:
    out = podman(
        "pod", "ps", "--filter", f"label=ferry.connection={connection}", "--format", "json"
    ).stdout
    return list(json.loads(out or "[]"))


def leftovers(connection: str) -> dict[str, list[str]]:
    """Pods, secrets and volumes ferry made for `connection` that still exist."""
    pods = [p["Name"] for p in pods_of(connection)]
    secrets = [
        secret["Spec"]["Name"]
        for secret in _all_secrets()
        if (secret["Spec"].get("Labels") or {}).get("ferry.connection") == connection
    ]
    prefix = f"ferry-{connection}-"
    volumes = [
        v["Name"]
        for v in json.loads(podman("volume", "ls", "--format", "json").stdout or "[]")
        if v["Name"].startswith(prefix)
    ]
    # Sorted: podman lists in no stable order.
    return {"pods": sorted(pods), "secrets": sorted(secrets), "volumes": sorted(volumes)}


def _all_secrets() -> list[dict[str, Any]]:
    """Every podman secret, inspected; listed again when one went between the listing and the
    inspection (other syncs and `ferry gc` runs on this machine remove theirs meanwhile)."""
    for _ in range(5):
        ids = podman("secret", "ls", "--noheading", "--format", "{{.ID}}").stdout.split()
        if not ids:
            return []
        inspected = podman("secret", "inspect", *ids, check=False)
        if inspected.returncode == 0:
            return list(json.loads(inspected.stdout or "[]"))
    raise AssertionError(f"podman secret inspect kept failing: {inspected.stderr}")


NOTHING: dict[str, list[str]] = {"pods": [], "secrets": [], "volumes": []}


def now_rfc3339() -> str:
    """The time as `podman events --since` takes it (whole seconds: it rounds them down)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pods_created(connection: str, since: str) -> list[str]:
    """The names of the pods ferry made for `connection` that podman created since `since`."""
    out = podman(
        "events",
        "--stream=false",
        "--since",
        since,
        "--filter",
        "type=pod",
        "--filter",
        "event=create",
        "--format",
        "{{.Name}}",
    ).stdout
    return [name for name in out.split() if name.startswith(f"ferry-{connection}-")]


# The heartbeat sidecar's budget once ferry is gone: it gives up on ferry within
# `give_up_within()`, then (the wrapper has stopped the connector) tries ONCE to report the exit
# code, bounded by the probe timeout (the termination marker exists: no retries), and exits.


def heartbeat_budget() -> float:
    settings = HeartbeatSettings()
    return settings.give_up_within() + settings.probe_timeout


def stream_records(summary: dict[str, Any]) -> dict[str, int]:
    return {s["stream"]: s["records_sent"] for s in summary["streams"]}


def write_connection(tmp_path: Path, name: str, **fields: Any) -> Path:
    path: Path = tmp_path / "connection.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}))
    return path


def ferry_sync(connection: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Exit code, the `--json` summary ({} if none) and stderr of one `ferry sync`."""
    result = subprocess.run(
        [sys.executable, "-m", "ferry", "sync", str(connection), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, summary, result.stderr


def committed_states(connection: str) -> int:
    """How many state messages the store holds for `connection` (FERRY_HOME: the fixture's)."""
    with open_store(None) as store:
        return len(store.load_state(connection).to_messages())
