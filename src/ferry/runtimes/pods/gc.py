"""`ferry gc` for pods: what dead ferry processes left in Podman and in Kubernetes.

Pods and Secrets ferry creates carry `app.kubernetes.io/managed-by: ferry`, the `ferry.*` labels
(run, connection, role, owner, host, pid, pid-start) and, on Kubernetes, the same values
unabridged as `ferry.dev/<label>` annotations (label values are limited to 63 characters).

A pod is garbage when
- its owner (OWNER_ID `{nodename}-{pid}-{random}`) ran on this host and that process is gone
  (`owner.orphan_reason`: the pid is dead, or now belongs to a process started at another time), or
  it finished and its owner ran on another host; or
- it finished (Succeeded: the connector exited 0; Failed: anything else) longer ago than the TTL
  of its phase (`DEFAULT_TTL`, overridable per call or with FERRY_GC_TTL_SUCCEEDED /
  FERRY_GC_TTL_FAILED in seconds), whoever owns it: a live ferry deletes its pods when they end,
  so a finished pod that lingers was forgotten.
A Secret is garbage with its pod, or when no pod uses it and its owner is gone or it is older
than the pending TTL (a ferry killed between creating the Secret and the Pod). Podman also keeps
a volume named after each secret (holding the files) and the pod's emptyDir volume: those go
with the pod and secret, and when nothing of that name remains.

`collect_podman(dry_run)` and `collect_kubernetes(dry_run)` return one line per resource removed
(or, with dry_run, that would be); an unreachable engine raises RuntimeUnavailable.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import CascadeType

from ferry.errors import RuntimeUnavailable
from ferry.runtimes.options import MANAGED_BY_LABEL
from ferry.runtimes.owner import orphan_reason, process_start, this_host
from ferry.runtimes.pods.kubernetes import api_error, is_not_found, load_config
from ferry.runtimes.pods.manifests import (
    CONNECTOR_CONTAINER,
    MANAGED_BY,
    label_value,
    labels_for_gc,
    podman_secret_pod,
)
from ferry.runtimes.pods.podman import pod_teardown

SUCCEEDED = "Succeeded"
FAILED = "Failed"
PENDING = "Pending"  # a Secret without its pod
DEFAULT_TTL: dict[str, float] = {SUCCEEDED: 3600.0, FAILED: 24 * 3600.0, PENDING: 3600.0}
ENV_TTL = {SUCCEEDED: "FERRY_GC_TTL_SUCCEEDED", FAILED: "FERRY_GC_TTL_FAILED"}
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# Names ferry gives pods (and their secrets and volumes): manifests.pod_name().
POD_NAME = re.compile(r"^ferry-[a-z0-9-]*-(spec|check|discover|read|write|pod)-[0-9a-f]{8}$")

Probe = Callable[[int], int | None]


def ttls(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """TTL per phase: defaults, then the environment, then `overrides`."""
    values = dict(DEFAULT_TTL)
    for phase, variable in ENV_TTL.items():
        raw = os.environ.get(variable, "").strip()
        if raw:
            with contextlib.suppress(ValueError):
                values[phase] = float(raw)
    values.update(overrides or {})
    return values


def garbage_reason(
    labels: Mapping[str, str],
    *,
    phase: str | None,
    finished_at: float | None,
    now: float,
    ttl: Mapping[str, float],
    host: str | None = None,
    probe: Probe = process_start,
) -> str | None:
    """Why a pod with these `ferry.*` labels is garbage, or None to keep it.

    `phase`: Succeeded/Failed once the connector finished, else None (running, pending).
    """
    local = host if host is not None else label_value(this_host())
    state = "exited" if phase in (SUCCEEDED, FAILED) else "running"
    reason = orphan_reason(labels, state, host=local, probe=probe)
    if reason is not None:
        return reason
    if phase in (SUCCEEDED, FAILED) and finished_at is not None:
        age = now - finished_at
        limit = ttl.get(phase, DEFAULT_TTL[phase])
        if age > limit:
            return f"{phase.lower()} {age:.0f}s ago (TTL {limit:.0f}s)"
    return None


def describe(kind: str, name: str, labels: Mapping[str, str], reason: str) -> str:
    return (
        f"{kind} {name} ({labels.get('ferry.role', '?')} of "
        f"{labels.get('ferry.connection', '?')}, run {labels.get('ferry.run', '?')}): {reason}"
    )


@dataclass
class _Sweep:
    """One collector's run: its clock and TTLs, what it has seen and doomed, its lines."""

    engine: str
    verb: str  # "remove" or "delete"
    dry_run: bool
    clock: float
    limits: dict[str, float]
    probe: Probe
    lines: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # kept pods (podman: every pod) by name
    doomed: set[str] = field(default_factory=set)

    def pod_reason(
        self, labels: Mapping[str, str], phase: str | None, finished_at: float | None
    ) -> str | None:
        return garbage_reason(
            labels,
            phase=phase,
            finished_at=finished_at,
            now=self.clock,
            ttl=self.limits,
            probe=self.probe,
        )

    def unused_secret_reason(
        self, labels: Mapping[str, str], created: float | None, relation: str
    ) -> str | None:
        """Why a Secret no pod `relation`s (uses, owns) is garbage: its owner is gone, or it
        is older than the pending TTL; None to keep it."""
        reason = orphan_reason(labels, "exited", host=label_value(this_host()), probe=self.probe)
        if reason is not None:
            return f"no pod {relation} it; {reason}"
        if created is not None and self.clock - created > self.limits[PENDING]:
            return f"no pod {relation} it and it is {self.clock - created:.0f}s old"
        return None

    def act(self, what: str, remove: Callable[[], str | None]) -> None:
        """Say what would be removed, or remove it and say how that went."""
        if self.dry_run:
            self.lines.append(f"{self.engine}: would {self.verb} {what}")
            return
        problem = remove()
        done = f"could not {self.verb} {what}: {problem}" if problem else f"{self.verb}d {what}"
        self.lines.append(f"{self.engine}: {done}")


# --- podman -------------------------------------------------------------------------------------


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("podman")
    if executable is None:
        raise RuntimeUnavailable("podman is not installed")
    try:
        return subprocess.run(
            [executable, *args], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeUnavailable(f"podman did not answer: {e}") from None


def _podman_json(*args: str) -> Any:
    result = _podman(*args)
    if result.returncode != 0:
        raise RuntimeUnavailable(
            f"`podman {' '.join(args[:2])}` failed: {result.stderr.strip()[:300]}"
        )
    text = result.stdout.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RuntimeUnavailable(f"`podman {' '.join(args[:2])}` printed no JSON: {e}") from None


def _podman_remove(*args: str) -> str | None:
    result = _podman(*args)
    if result.returncode == 0 or "no such" in result.stderr or "no pod with name" in result.stderr:
        return None
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "failed to connect to syslog" not in line
    ]
    return " ".join(lines)[:300] or f"exit code {result.returncode}"


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00")
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # nanoseconds -> microseconds
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    return None


def collect_podman(
    dry_run: bool,
    *,
    ttl: Mapping[str, float] | None = None,
    now: float | None = None,
    probe: Probe = process_start,
) -> list[str]:
    """Remove the podman pods, secrets and volumes whose ferry owner is gone or that are stale."""
    sweep = _Sweep(
        "podman", "remove", dry_run, time.time() if now is None else now, ttls(ttl), probe
    )
    # Volumes are listed first: a pod started meanwhile is then in the pod list with its volume
    # (listed the other way round, a starting pod's volume looked like nobody's).
    volumes = _podman_json("volume", "ls", "--format", "json")
    pods = _podman_json("pod", "ps", "--filter", f"label={SELECTOR}", "--format", "json")
    containers = _podman_json("ps", "-a", "--filter", f"label={SELECTOR}", "--format", "json")
    _sweep_podman_pods(sweep, pods, containers)
    secret_names = _sweep_podman_secrets(sweep, _podman_secrets())
    _sweep_podman_volumes(sweep, volumes, secret_names)
    return sweep.lines


def _sweep_podman_pods(
    sweep: _Sweep, pods: list[Mapping[str, Any]], containers: list[Mapping[str, Any]]
) -> None:
    by_pod: dict[str, list[Mapping[str, Any]]] = {}
    for container in containers:
        by_pod.setdefault(str(container.get("Pod") or ""), []).append(container)
    for pod in pods:
        name = str(pod.get("Name") or "")
        sweep.seen.add(name)
        labels = labels_for_gc(pod.get("Labels") or {}, {})
        phase, finished_at = _podman_phase(
            name, str(pod.get("Status") or ""), by_pod.get(str(pod.get("Id")), [])
        )
        reason = sweep.pod_reason(labels, phase, finished_at)
        if reason is not None:
            sweep.doomed.add(name)
            sweep.act(describe("pod", name, labels, reason), functools.partial(_remove_pod, name))


def _remove_pod(name: str) -> str | None:
    stop, remove = pod_teardown(name)
    _podman(*stop)
    return _podman_remove(*remove)


def _sweep_podman_secrets(sweep: _Sweep, secrets: list[Mapping[str, Any]]) -> set[str]:
    """Remove the secrets (and their volumes) no kept pod uses; the names of ferry's secrets."""
    names: set[str] = set()
    for secret in secrets:
        spec = secret.get("Spec") or {}
        if (spec.get("Labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        name = str(spec.get("Name") or "")
        names.add(name)
        labels = labels_for_gc(spec.get("Labels") or {}, {})
        pod = podman_secret_pod(name)
        if pod in sweep.doomed:
            reason: str | None = "its pod is being removed"
        elif pod in sweep.seen:
            continue
        else:
            reason = sweep.unused_secret_reason(labels, _timestamp(secret.get("CreatedAt")), "uses")
        if reason is not None:
            sweep.doomed.add(name)
            what = describe("secret", name, labels, reason) + " (and its volume)"
            sweep.act(what, functools.partial(_remove_secret, name))
    return names


def _remove_secret(name: str) -> str | None:
    return _podman_remove("secret", "rm", name) or _podman_remove("volume", "rm", "-f", name)


def _sweep_podman_volumes(
    sweep: _Sweep, volumes: list[Mapping[str, Any]], secret_names: set[str]
) -> None:
    """Remove the volumes named after a pod (its emptyDir `<pod>-io`) or after one of its
    secrets (`<pod>`, `<pod>.<volume>`: the files) that nothing uses."""
    for volume in volumes:
        name = str(volume.get("Name") or "")
        owner = name.removesuffix("-io")  # the pod, or the secret whose files it holds
        pod = podman_secret_pod(owner)
        if not POD_NAME.match(pod) or name in sweep.doomed:
            continue
        gone = pod not in sweep.seen and owner not in secret_names
        if gone or pod in sweep.doomed or owner in sweep.doomed:
            remove = functools.partial(_podman_remove, "volume", "rm", "-f", name)
            sweep.act(f"volume {name}: no pod or secret {owner} remains", remove)


def _podman_phase(
    name: str, pod_status: str, containers: list[Mapping[str, Any]]
) -> tuple[str | None, float | None]:
    """(Succeeded|Failed|None, finish time) of a podman pod from its connector container."""
    connector = next(
        (c for c in containers if f"{name}-{CONNECTOR_CONTAINER}" in (c.get("Names") or [])),
        None,
    )
    if connector is not None:
        state = str(connector.get("State") or "").lower()
        if state in ("exited", "stopped", "dead") or connector.get("Exited"):
            code = int(connector.get("ExitCode") or 0)
            return (SUCCEEDED if code == 0 else FAILED), _timestamp(connector.get("ExitedAt"))
        if state in ("created", "configured") and pod_status.lower() in (
            "exited",
            "stopped",
            "dead",
        ):
            return FAILED, None
        return None, None
    if pod_status.lower() in ("exited", "stopped", "dead"):
        return FAILED, None
    return None, None


def _podman_secrets() -> list[Mapping[str, Any]]:
    listed = _podman("secret", "ls", "--noheading", "--format", "{{.ID}}")
    if listed.returncode != 0:
        raise RuntimeUnavailable(f"`podman secret ls` failed: {listed.stderr.strip()[:300]}")
    ids = listed.stdout.split()
    if not ids:
        return []
    found = _podman_json("secret", "inspect", *ids)
    return list(found) if isinstance(found, list) else []


# --- kubernetes ---------------------------------------------------------------------------------


def _k8s_phase(pod: Mapping[str, Any]) -> tuple[str | None, float | None]:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == CONNECTOR_CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated:
                code = int(terminated.get("exitCode", 1))
                finished = _timestamp(terminated.get("finishedAt"))
                return (SUCCEEDED if code == 0 else FAILED), finished
    phase = str(status.get("phase") or "")
    if phase in (SUCCEEDED, FAILED):
        finished = None
        for condition in status.get("conditions") or []:
            stamp = _timestamp(condition.get("lastTransitionTime"))
            if stamp is not None and (finished is None or stamp > finished):
                finished = stamp
        if finished is None:
            finished = _timestamp(status.get("startTime"))
        return phase, finished
    return None, None


def collect_kubernetes(
    dry_run: bool,
    *,
    namespace: str | None = None,
    ttl: Mapping[str, float] | None = None,
    now: float | None = None,
    config: KubeConfig | None = None,
    probe: Probe = process_start,
) -> list[str]:
    """Delete the pods and Secrets (in ferry's namespace) whose owner is gone or that are stale.

    `namespace`: default the kubeconfig context's (in a pod: the service account's).
    """
    sweep = _Sweep(
        "kubernetes", "delete", dry_run, time.time() if now is None else now, ttls(ttl), probe
    )
    try:
        client = Client(config=config or load_config(), field_manager="ferry")
    except RuntimeUnavailable:
        raise
    except Exception as e:
        raise RuntimeUnavailable(f"cannot set up the Kubernetes client: {e}") from None
    try:
        ns = namespace or client.namespace or "default"
        try:
            pods, secrets = _managed(client, Pod, ns), _managed(client, Secret, ns)
        except Exception as e:
            raise api_error(f"list ferry's pods and secrets in {ns}", e) from None
        pod_uids = _sweep_kubernetes_pods(sweep, client, ns, pods)
        _sweep_kubernetes_secrets(sweep, client, ns, secrets, pod_uids)
    finally:
        client.close()
    return sweep.lines


def _managed(
    client: Client, kind: type[Pod] | type[Secret], namespace: str
) -> list[dict[str, Any]]:
    listed = client.list(kind, namespace=namespace, labels={MANAGED_BY_LABEL: MANAGED_BY})
    return [item.to_dict() for item in listed]


def _sweep_kubernetes_pods(
    sweep: _Sweep, client: Client, namespace: str, pods: list[dict[str, Any]]
) -> set[str]:
    """Delete the garbage pods (their uids become `sweep.doomed`, kept names `sweep.seen`);
    the uids of every pod."""
    uids: set[str] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name"))
        uid = str(meta.get("uid") or "")
        uids.add(uid)
        labels = labels_for_gc(meta.get("labels") or {}, meta.get("annotations") or {})
        phase, finished = _k8s_phase(pod)
        reason = sweep.pod_reason(labels, phase, finished)
        if reason is None:
            sweep.seen.add(name)
            continue
        sweep.doomed.add(uid)
        delete = functools.partial(
            _delete, client, Pod, name, namespace, grace_period=0, cascade=CascadeType.BACKGROUND
        )
        sweep.act(describe("pod", f"{namespace}/{name}", labels, reason), delete)
    return uids


def _sweep_kubernetes_secrets(
    sweep: _Sweep,
    client: Client,
    namespace: str,
    secrets: list[dict[str, Any]],
    pod_uids: set[str],
) -> None:
    """Delete the Secrets whose pod is gone or being deleted, and those no pod owns that are
    orphans or older than the pending TTL."""
    for secret in secrets:
        meta = secret.get("metadata") or {}
        name = str(meta.get("name"))
        labels = labels_for_gc(meta.get("labels") or {}, meta.get("annotations") or {})
        owners = [
            str(o.get("uid")) for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"
        ]
        live = [uid for uid in owners if uid in pod_uids and uid not in sweep.doomed]
        if live or name in sweep.seen:
            continue
        if owners:
            reason: str | None = "its pod is gone or being deleted"
        else:
            created = _timestamp(meta.get("creationTimestamp"))
            reason = sweep.unused_secret_reason(labels, created, "owns")
        if reason is not None:
            delete = functools.partial(_delete, client, Secret, name, namespace)
            sweep.act(describe("secret", f"{namespace}/{name}", labels, reason), delete)


def _delete(
    client: Client,
    kind: type[Pod] | type[Secret],
    name: str,
    namespace: str,
    **options: Any,
) -> str | None:
    """Delete one resource; None when it is gone, else what went wrong."""
    try:
        client.delete(kind, name, namespace=namespace, **options)
    except Exception as e:
        if not is_not_found(e):
            return str(api_error("delete it", e))
    return None
