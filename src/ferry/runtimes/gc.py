"""`ferry gc`: remove the containers, pods and secrets that dead ferry processes left.

Collectors are plain functions `(dry_run) -> lines`, one per engine, listed in COLLECTORS. Each
judges what it finds with `owner.orphan_reason` (the owner's labels) and removes the garbage; a
collector whose engine is unreachable raises RuntimeUnavailable and is reported as skipped. This
module loads every engine's client: the CLI imports it only for `ferry gc`.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.errors import RuntimeUnavailable
from ferry.runtimes.docker.gc import collect_docker
from ferry.runtimes.pods.gc import collect_kubernetes, collect_podman

Collector = Callable[[bool], list[str]]

COLLECTORS: dict[str, Collector] = {
    "docker": collect_docker,
    "podman": collect_podman,
    "kubernetes": collect_kubernetes,
}


def collect_garbage(dry_run: bool) -> list[str]:
    """Run every collector; lines say what was (or, with dry_run, would be) removed.

    An engine that is not available is skipped with a line saying so, never a failure.
    """
    lines: list[str] = []
    for engine, collector in COLLECTORS.items():
        try:
            lines += collector(dry_run)
        except RuntimeUnavailable as e:
            reason = e.message.split(". ", 1)[0]
            lines.append(f"{engine}: skipped, not available ({reason})")
    return lines
