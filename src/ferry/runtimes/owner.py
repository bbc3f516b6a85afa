"""Who owns what ferry started, and whether that owner is gone (what `ferry gc` judges by).

Everything ferry starts carries `ferry.owner` (OWNER_ID: `{nodename}-{pid}-{random}`) plus
`ferry.host`, `ferry.pid` and `ferry.pid-start` (the owner's start time in clock ticks since
boot, from /proc/<pid>/stat), so a pid reused by another process is not mistaken for the owner.
A resource is garbage when its owner ran on this host and that process is gone; resources from
other hosts are left alone unless they have finished (their owner may be alive over there).
Every runtime labels what it starts with `RunLabels.as_labels()` plus `owner_labels()`, so that
`orphan_reason` can judge it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ferry.home import process_start as process_start  # gc's probe, re-exported
from ferry.runtimes.base import OWNER_ID

OWNER_LABEL = "ferry.owner"
HOST_LABEL = "ferry.host"
PID_LABEL = "ferry.pid"
PID_START_LABEL = "ferry.pid-start"
# Container states in which nothing can still be happening (Docker and Podman spellings).
FINISHED_STATES = frozenset({"exited", "dead", "stopped"})

ProcessProbe = Callable[[int], int | None]


def this_host() -> str:
    return os.uname().nodename


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
