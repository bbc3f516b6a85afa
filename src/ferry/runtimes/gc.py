"""`ferry gc`: remove the containers (and later pods, secrets) that dead ferry processes left.

Everything ferry starts carries `ferry.owner` (OWNER_ID: `{nodename}-{pid}-{random}`) plus
`ferry.host`, `ferry.pid` and `ferry.pid-start` (the owner's start time in clock ticks since
boot, from /proc/<pid>/stat), so a pid reused by another process is not mistaken for the owner.
A resource is garbage when its owner ran on this host and that process is gone; resources from
other hosts are left alone unless they have finished (their owner may be alive over there).

Collectors are plain functions `(dry_run) -> lines`, one per engine, listed in COLLECTORS (as
"module:function" for lazy import); a collector whose engine is unreachable raises
RuntimeUnavailable and is reported as skipped. To add one (Kubernetes, ...), add its entry to
COLLECTORS, and label everything with `RunLabels.as_labels()` plus `owner_labels()` so that
`orphan_reason` can judge it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ferry.errors import RuntimeUnavailable
from ferry.runtimes.base import OWNER_ID

OWNER_LABEL = "ferry.owner"
HOST_LABEL = "ferry.host"
PID_LABEL = "ferry.pid"
PID_START_LABEL = "ferry.pid-start"
# Container states in which nothing can still be happening (Docker and Podman spellings).
FINISHED_STATES = frozenset({"exited", "dead", "stopped"})

Collector = Callable[[bool], list[str]]
ProcessProbe = Callable[[int], int | None]


def this_host() -> str:
    return os.uname().nodename


def process_start(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot; None if there is no such process.

    A zombie (dead, not yet reaped) counts as gone. Without procfs the start time is unknown (0).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    # Field 2 (comm) may hold spaces and parentheses: the rest starts after its last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])  # field 22 of the whole line: starttime
    except (IndexError, ValueError):
        return 0


def owner_labels() -> dict[str, str]:
    """Labels identifying this process for gc; put them next to RunLabels.as_labels()."""
    pid = os.getpid()
    start = process_start(pid)
    labels = {HOST_LABEL: this_host(), PID_LABEL: str(pid)}
    if start:
        labels[PID_START_LABEL] = str(start)
    return labels


def split_owner(owner: str) -> tuple[str, int] | None:
    """(host, pid) of an OWNER_ID; the host part may itself contain dashes."""
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def orphan_reason(
    labels: Mapping[str, str],
    state: str,
    *,
    host: str | None = None,
    probe: ProcessProbe = process_start,
) -> str | None:
    """Why a labelled resource is garbage, or None to keep it."""
    owner = labels.get(OWNER_LABEL)
    if not owner or owner == OWNER_ID:
        return None
    parsed = split_owner(owner)
    owner_host = labels.get(HOST_LABEL) or (parsed[0] if parsed else None)
    pid_text = labels.get(PID_LABEL) or (str(parsed[1]) if parsed else "")
    local = host if host is not None else this_host()
    if owner_host != local or not pid_text.isdigit():
        if state.lower() in FINISHED_STATES:
            return f"{state} and owned by {owner} on another host"
        return None
    pid = int(pid_text)
    started = probe(pid)
    if started is None:
        return f"owner process {pid} is gone"
    expected = labels.get(PID_START_LABEL, "")
    if expected.isdigit() and started and int(expected) != started:
        return f"owner process {pid} is gone (the pid now belongs to another process)"
    return None


def collect_docker(dry_run: bool) -> list[str]:
    """Remove containers whose ferry owner is gone."""
    import docker.errors

    from ferry.runtimes.docker.runtime import connect, engine_error

    client = connect()
    try:
        try:
            containers = client.api.containers(all=True, filters={"label": OWNER_LABEL})
        except Exception as e:
            raise engine_error("list containers", e) from None
        lines: list[str] = []
        for container in containers:
            labels: Mapping[str, str] = container.get("Labels") or {}
            state = str(container.get("State") or "")
            reason = orphan_reason(labels, state)
            if reason is None:
                continue
            names = container.get("Names") or []
            name = str(names[0]).lstrip("/") if names else str(container["Id"])[:12]
            what = (
                f"container {name} ({str(container['Id'])[:12]}, {state}; "
                f"{labels.get('ferry.role', '?')} of {labels.get('ferry.connection', '?')}, "
                f"run {labels.get('ferry.run', '?')}): {reason}"
            )
            if dry_run:
                lines.append(f"docker: would remove {what}")
                continue
            try:
                # v=True: a relay sandbox owns an anonymous volume (the shared FIFO dir).
                client.api.remove_container(container["Id"], force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as e:
                lines.append(f"docker: could not remove {what}: {e.explanation or e}")
                continue
            lines.append(f"docker: removed {what}")
        return lines
    finally:
        client.close()


# engine -> collector, or "module:function" imported only when gc runs (so `ferry gc` loads the
# clients of each engine lazily, and a collector module still being written is simply absent).
COLLECTORS: dict[str, Collector | str] = {
    "docker": collect_docker,
    "podman": "ferry.runtimes.pods.gc:collect_podman",
    "kubernetes": "ferry.runtimes.pods.gc:collect_kubernetes",
}


def register_collector(engine: str, collector: Collector | str) -> None:
    """Add (or replace) the collector of an engine: a function or "module:function"."""
    COLLECTORS[engine] = collector


def _resolve(collector: Collector | str) -> Collector | None:
    if not isinstance(collector, str):
        return collector
    module_name, _, function = collector.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise
    found: Collector = getattr(module, function)
    return found


def collect_garbage(dry_run: bool) -> list[str]:
    """Run every collector; lines say what was (or, with dry_run, would be) removed.

    An engine that is not available is skipped with a line saying so, never a failure.
    """
    lines: list[str] = []
    for engine, entry in COLLECTORS.items():
        collector = _resolve(entry)
        if collector is None:
            continue
        try:
            lines += collector(dry_run)
        except RuntimeUnavailable as e:
            reason = e.message.split(". ", 1)[0]
            lines.append(f"{engine}: skipped, not available ({reason})")
    return lines
