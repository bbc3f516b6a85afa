"""Runtimes start connectors: local processes, Docker containers, Podman and Kubernetes pods."""

from __future__ import annotations

from ferry.errors import ConfigError
from ferry.runtimes.base import (
    RUNTIME_NAMES,
    ConnectorInvocation,
    ConnectorOptions,
    ConnectorProcess,
    ConnectorRef,
    RunLabels,
    Runtime,
)

__all__ = [
    "RUNTIME_NAMES",
    "ConnectorInvocation",
    "ConnectorOptions",
    "ConnectorProcess",
    "ConnectorRef",
    "RunLabels",
    "Runtime",
    "get_runtime",
]


def get_runtime(name: str) -> Runtime:
    """A fresh runtime of that name; imported lazily so `local` never loads container clients."""
    if name == "local":
        from ferry.runtimes.local.process import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from ferry.runtimes.docker.runtime import DockerRuntime

        return DockerRuntime()
    if name == "podman":
        from ferry.runtimes.pods.podman import PodmanRuntime

        return PodmanRuntime()
    if name == "kubernetes":
        from ferry.runtimes.pods.kubernetes import KubernetesRuntime

        return KubernetesRuntime()
    raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_NAMES)}")
