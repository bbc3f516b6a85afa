"""Starting a single pod (`single_pod.build_single_pod`) on podman or Kubernetes.

The pod is followed like a per-connector pod (`PodProcess` over the relay registration of its
token), with the pump container as the pod's main container: its stdout channel is the control
stream, its stdin channel takes the launching ferry's commands, its stderr is the pump's log. A
failure of any container is reported naming it: a pull error before the pod starts, an init
container's failure, an OOMKilled source, destination or pump.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ferry.errors import ConfigError, ConnectorCrashed
from ferry.relay import (
    RelayRegistration,
    derive_entrypoint,
    shared_listener,
)
from ferry.runtimes.base import ConnectorInvocation, ConnectorRef, LogSink, Runtime
from ferry.runtimes.owner import owner_labels
from ferry.runtimes.pods.kubernetes import OOM_HINTS, KubernetesPod, KubernetesRuntime, relay_host
from ferry.runtimes.pods.layout import PodPair
from ferry.runtimes.pods.manifests import PodManifests
from ferry.runtimes.pods.podman import (
    PodmanPod,
    PodmanRuntime,
    clean_stderr,
    podman,
    podman_playable,
    podman_relay_host,
)
from ferry.runtimes.pods.single_pod import PUMP_CONTAINER, ROLES, build_single_pod
from ferry.runtimes.relayed import PodProcess, start_pod

logger = logging.getLogger("ferry.runtimes.pod")

Entrypoint = Callable[[ConnectorInvocation], Awaitable[str | None]]


class PodmanPairPod(PodmanPod):
    """A played single pod: its result is the pump's exit, and an OOMKilled connector says so."""

    def __init__(
        self,
        manifests: PodManifests,
        *,
        deadline: int | None,
        check_images: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(manifests, deadline=deadline, check_images=check_images)
        self.container = f"{manifests.name}-{PUMP_CONTAINER}"

    async def _wait(self) -> int:
        """The pump's exit code; one `podman inspect` also tells whether a container was
        OOMKilled (podman wait and inspect cost 0.1-0.5 s each)."""
        await podman("wait", self.container, limit=None)
        containers = [self.container] + [f"{self.name}-{role}" for role in ROLES]
        state = await podman(
            "inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}", *containers
        )
        rows = [row.split(" ") for row in state.stdout.strip().splitlines()]
        if state.code != 0 or len(rows) != len(containers):
            raise ConnectorCrashed(
                f"{self.description}: cannot read the state of its containers (removed under "
                f"ferry?): {clean_stderr(state.stderr)}"
            )
        for name, (oom, _) in zip([PUMP_CONTAINER, *ROLES], rows, strict=True):
            if oom == "true":
                raise ConnectorCrashed(
                    f"{self.description}: the {name} container was OOMKilled; raise "
                    f"{OOM_HINTS[name]}"
                )
        return int(rows[0][1])


class KubernetesPairPod(KubernetesPod):
    """A single pod on Kubernetes: the pump's exit is the result; an OOMKilled connector is
    reported once the pump has drained what it did."""

    main_container = PUMP_CONTAINER
    deferred_containers = frozenset(ROLES)


async def _entrypoints(pair: PodPair, auto: Entrypoint) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for invocation in pair.invocations():
        option = invocation.connector.options.entrypoint
        if option and option.strip() == "auto":
            found[invocation.labels.role] = await auto(invocation)
    return found


def _pump_invocation(pair: PodPair, runtime: str) -> ConnectorInvocation:
    """The pod as the relay listener sees it: the pump, which reads commands on its stdin."""
    ref = ConnectorRef(runtime, pair.layout.image())
    return ConnectorInvocation(ref, "write", labels=pair.labels)


async def start_podman_pair(runtime: PodmanRuntime, pair: PodPair, log: LogSink) -> PodProcess:
    settings = pair.layout.settings
    images = [(i.connector.target, i.connector.options.pull) for i in pair.invocations()]
    await asyncio.gather(*(runtime.ensure_image(image, pull) for image, pull in images))

    async def auto(invocation: ConnectorInvocation) -> str | None:
        return derive_entrypoint(await runtime.image_config(invocation.connector.target))

    entrypoints = await _entrypoints(pair, auto)
    host = podman_relay_host(settings)
    listener = await shared_listener()

    def make_pod(registration: RelayRegistration) -> PodmanPairPod:
        manifests = build_single_pod(
            pair,
            token=registration.token,
            endpoint=listener.endpoint(host),
            entrypoints=entrypoints,
            extra_labels=owner_labels(),
        )
        playable = podman_playable(manifests, settings, pulled=True)  # pulled by then

        async def ferry_image() -> None:  # while the pod's secrets are created
            await runtime.ensure_image(pair.layout.image(), "if-not-present")

        return PodmanPairPod(
            playable, deadline=settings.active_deadline_seconds, check_images=ferry_image
        )

    return await start_pod(_pump_invocation(pair, "podman"), log, listener, make_pod)


async def start_kubernetes_pair(
    runtime: KubernetesRuntime, pair: PodPair, log: LogSink
) -> PodProcess:
    settings = pair.layout.settings
    client = await runtime.client()
    namespace = settings.namespace or runtime.default_namespace

    async def auto(invocation: ConnectorInvocation) -> str | None:
        return await runtime.auto_entrypoint(
            client, invocation.connector.target, namespace, settings.image_pull_secrets
        )

    entrypoints = await _entrypoints(pair, auto)
    listener = await shared_listener()

    def make_pod(registration: RelayRegistration) -> KubernetesPairPod:
        manifests = build_single_pod(
            pair,
            token=registration.token,
            endpoint=listener.endpoint(relay_host(settings)),
            namespace=namespace,
            entrypoints=entrypoints,
            extra_labels=owner_labels(),
        )
        return KubernetesPairPod(client, manifests, settings.schedule_timeout_seconds)

    return await start_pod(_pump_invocation(pair, "kubernetes"), log, listener, make_pod)


async def start_pair(runtime: Runtime, pair: PodPair, log: LogSink) -> PodProcess:
    """Start `pair` as one pod on `runtime` (podman or kubernetes); its stdout is the control
    stream, its stdin takes commands, `log` gets the pump's own log lines."""
    if isinstance(runtime, PodmanRuntime):
        return await start_podman_pair(runtime, pair, log)
    if isinstance(runtime, KubernetesRuntime):
        return await start_kubernetes_pair(runtime, pair, log)
    raise ConfigError(f"the {runtime.name} runtime cannot run a single pod (podman, kubernetes)")
