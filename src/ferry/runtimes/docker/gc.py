"""`ferry gc` for Docker: remove the containers whose ferry owner is gone."""

from __future__ import annotations

from collections.abc import Mapping

import docker.errors

from ferry.runtimes.docker.engine import connect, engine_error
from ferry.runtimes.owner import OWNER_LABEL, orphan_reason


def collect_docker(dry_run: bool) -> list[str]:
    """Remove containers whose ferry owner is gone."""
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
