"""What the Docker runtime tests (plain and relay) share: invocations and a look at the engine."""

from __future__ import annotations

import uuid
from typing import Any

from ferry.runtimes.base import ConnectorInvocation, ConnectorRef, RunLabels, Verb


def invocation(
    ref: ConnectorRef,
    verb: Verb = "spec",
    files: dict[str, bytes] | None = None,
    run_id: str | None = None,
) -> ConnectorInvocation:
    labels = RunLabels(run_id=run_id or uuid.uuid4().hex, connection="test-docker", role="source")
    return ConnectorInvocation(ref, verb, files=files or {}, labels=labels)


def docker_client() -> Any:
    import docker

    return docker.from_env()


def containers_of(run_id: str) -> list[dict[str, Any]]:
    """Every container (any state) of one run, as the engine lists them."""
    client = docker_client()
    try:
        found: list[dict[str, Any]] = client.api.containers(
            all=True, filters={"label": f"ferry.run={run_id}"}
        )
    finally:
        client.close()
    return found
