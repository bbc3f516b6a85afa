"""Runtimes start connectors: local processes, Docker containers, Podman and Kubernetes pods."""

from __future__ import annotations

from collections.abc import Mapping

from ferry.errors import ConfigError
from ferry.runtimes import docker, local, pods
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
    "check_options_apply",
    "get_runtime",
]

# The connector-block options each runtime honours, as its kind declares them; any other option
# set is an error, not ignored.
HONOURED_OPTIONS: Mapping[str, frozenset[str]] = {
    "local": local.OPTIONS,
    "docker": docker.OPTIONS,
    "podman": pods.OPTIONS,
    "kubernetes": pods.OPTIONS,
}
_OPTION_HINTS = {
    "network": "a pod's network is set with kubernetes: {host_network: ...}",
    "memory": "resource limits need a container runtime",
    "cpu": "resource limits need a container runtime",
}


def check_options_apply(runtime: str, options: ConnectorOptions) -> None:
    """Raise ConfigError naming every option that is set but that `runtime` would ignore."""
    ignored = [name for name in options.set_options() if name not in HONOURED_OPTIONS[runtime]]
    if not ignored:
        return
    hints = sorted({_OPTION_HINTS[name] for name in ignored if name in _OPTION_HINTS})
    users = [r for r in RUNTIME_NAMES if set(ignored) <= HONOURED_OPTIONS[r]]
    raise ConfigError(
        f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to the "
        f"{runtime} runtime (only to {' and '.join(users) or 'other runtimes'})"
        + "".join(f"; {hint}" for hint in hints)
    )


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
