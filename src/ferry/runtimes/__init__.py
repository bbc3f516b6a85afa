"""Runtimes start connectors: local processes, Docker containers, Podman and Kubernetes pods.

This package is the registry of runtime kinds: each kind's machinery (container clients, pod
manifests, lightkube) is imported here, on demand, when a connector or a layout first needs it,
so that a local sync never loads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ferry.errors import ConfigError
from ferry.runtimes.base import (
    RUNTIME_NAMES,
    ConnectorInvocation,
    ConnectorProcess,
    ConnectorRef,
    LogSink,
    RunLabels,
    Runtime,
)
from ferry.runtimes.options import ConnectorOptions
from ferry.runtimes.pods.layout import PodPair
from ferry.runtimes.relayed import PodProcess
from ferry.runtimes.resolve import check_options_apply

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
    "render_pod_manifests",
    "start_pair",
]


def get_runtime(name: str) -> Runtime:
    """A fresh runtime of that name."""
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


async def start_pair(runtime: Runtime, pair: PodPair, log: LogSink) -> PodProcess:
    """Start `pair` as one pod on `runtime` (podman or kubernetes): the single-pod layout."""
    from ferry.runtimes.pods.pod_pair import start_pair as start_on_pods

    return await start_on_pods(runtime, pair, log)


def render_pod_manifests(
    pods: PodPair | Sequence[ConnectorInvocation], runtime: str, namespace: str = "default"
) -> str:
    """The YAML of the pods that would run a single-pod `PodPair`, or each of a sequence of
    invocations, on `runtime` (`namespace` where a block names none); secret values redacted."""
    from ferry.runtimes.pods.manifests import render_dry_run
    from ferry.runtimes.pods.single_pod import render_pair_dry_run

    if isinstance(pods, PodPair):
        return render_pair_dry_run(pods, runtime=runtime)
    return render_dry_run(pods, runtime=runtime, namespace=namespace)
