"""The Kubernetes runtime: one pod per connector run, through lightkube's AsyncClient.

Configuration: the in-cluster service account when ferry runs in a pod, else KUBECONFIG (or
~/.kube/config). The namespace is the connector block's `kubernetes: {namespace: ...}`, else the
kubeconfig context's (the service account's in-cluster), else `default`.

How pods reach ferry's relay port is explicit, first match wins:
1. `kubernetes: {relay_host: ...}` in the connector block (e.g. a Service's DNS name),
2. FERRY_RELAY_HOST,
3. FERRY_POD_IP (ferry's own pod IP from the downward API, see deploy/),
and otherwise starting fails with a ConfigError saying so. The port is the relay listener's
(FERRY_RELAY_PORT pins it, e.g. for a Service or a NetworkPolicy).

Per run: the Secret (config, catalog, state) is created, then the Pod, then the Secret gets an
ownerReference to the Pod (its uid only exists now), so deleting the pod deletes the Secret. The
pod is watched until the connector container terminates; its exit code is the result. ferry
fails fast and says why on ErrImagePull/ImagePullBackOff (any container), OOMKilled, eviction,
DeadlineExceeded (activeDeadlineSeconds), a failed init container, a pod deleted under it, and
a pod still unscheduled after `schedule_timeout_seconds`.
On finish and on cancel the pod is deleted (background propagation) and the Secret with it.

`entrypoint: auto` for an image without AIRBYTE_ENTRYPOINT: Kubernetes does not expose image
metadata, so the image's config is read from its registry (`registry.py`; ENTRYPOINT, else CMD), with the
credentials of the connector's imagePullSecrets, else the local docker config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError as KubeConfigError
from lightkube.models.core_v1 import (
    Container,
    ContainerStateTerminated,
    ContainerStatus,
    PodSpec,
    PodStatus,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import CascadeType, PatchType

from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    FerryError,
    ImageUnavailable,
    RuntimeUnavailable,
)
from ferry.relay import (
    RelayRegistration,
    check_relay_host,
    derive_entrypoint,
    shared_listener,
)
from ferry.relay import sidecar_image as resolve_sidecar_image
from ferry.runtimes.base import ConnectorInvocation, ConnectorRef, LogSink, fingerprint_of
from ferry.runtimes.options import KubernetesSettings
from ferry.runtimes.owner import owner_labels
from ferry.runtimes.pods.manifests import (
    CONNECTOR_CONTAINER,
    PodManifests,
    build_manifests,
    secret_owner_patch,
)
from ferry.runtimes.pods.registry import (
    docker_configs_from_pull_secrets,
    fetch_image_config,
)
from ferry.runtimes.relayed import PodProcess, start_pod

logger = logging.getLogger(__name__)

ENV_RELAY_HOST = "FERRY_RELAY_HOST"
ENV_POD_IP = "FERRY_POD_IP"
FIELD_MANAGER = "ferry"

PULL_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
    }
)
CONFIG_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# What to raise when a single pod's container other than the connector is OOMKilled.
OOM_HINTS = {
    "source": "source.resources.memory or source.kubernetes.resources.limits.memory",
    "destination": "destination.resources.memory or destination.kubernetes.resources.limits.memory",
    "pump": "kubernetes.pump_resources.limits.memory",
}
WATCH_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
_DIGEST_PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


# --- reading a pod's status (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class PodAssessment:
    """What one observed state of the pod means for ferry."""

    running: bool = False
    exit_code: int | None = None
    error: FerryError | None = None
    note: str | None = None  # worth a log line (e.g. unschedulable), not a failure
    scheduled: bool = False  # bound to a node (so the schedule timeout no longer applies)


@dataclass(frozen=True)
class _PodView:
    """The parts of a pod that `assess_pod` reads, with the defaults of what is not there yet."""

    where: str
    spec: PodSpec | None
    status: PodStatus
    being_deleted: bool
    connector: ContainerStatus | None  # the main container's status (None before it has one)
    main: str = CONNECTOR_CONTAINER  # the connector's, or a single pod's pump
    deferred: frozenset[str] = frozenset()  # their OOMKilled is told once the main one ended

    @classmethod
    def of(cls, pod: Pod, main: str, deferred: frozenset[str]) -> _PodView:
        metadata = pod.metadata or ObjectMeta()
        status = pod.status or PodStatus()
        where = f"pod {metadata.name or '?'}"
        if metadata.namespace:
            where += f" (namespace {metadata.namespace})"
        statuses = [c for c in status.containerStatuses or [] if c.name == main]
        return cls(
            where=where,
            spec=pod.spec,
            status=status,
            being_deleted=metadata.deletionTimestamp is not None,
            connector=statuses[0] if statuses else None,
            main=main,
            deferred=deferred,
        )

    @property
    def phase(self) -> str:
        return self.status.phase or ""

    @property
    def reason(self) -> str:
        return self.status.reason or ""

    @property
    def message(self) -> str:
        return _message(self.status.message)

    def container(self, name: str, init: bool = False) -> Container | None:
        """The spec of a container (an init container's with `init`)."""
        spec = self.spec
        containers = (spec.initContainers if init else spec.containers) if spec else None
        return next((c for c in containers or [] if c.name == name), None)


def _message(text: str | None) -> str:
    return (text or "").strip() or "no message"


def _terminated(container: ContainerStatus | None) -> ContainerStateTerminated | None:
    return container.state.terminated if container and container.state else None


def _crashed(message: str) -> PodAssessment:
    return PodAssessment(error=ConnectorCrashed(message))


def assess_pod(
    pod: Pod,
    *,
    deleted: bool = False,
    deleting: bool = False,
    main: str = CONNECTOR_CONTAINER,
    deferred: frozenset[str] = frozenset(),
) -> PodAssessment:
    """Interpret a pod for its main container: the connector's, or a single pod's pump, whose
    `deferred` containers (the connectors) may end before it: an OOMKilled one is told once the
    pump has drained what it did.

    `deleted`: the watch reported DELETED; `deleting`: ferry itself is deleting the pod (then a
    deletion is no failure). The first reading that applies wins: the connector's exit, a
    deletion, Kubernetes stopping the pod, a container that cannot run, the pod's end; else how
    far the pod got.
    """
    view = _PodView.of(pod, main, deferred)
    found = (
        _connector_exit(view)
        or (None if deleting else _deletion(view, deleted))
        or _stopped_by_kubernetes(view)
        or _container_problem(view)
        or _pod_ended(view)
    )
    return found or _progress(view)


def _connector_exit(view: _PodView) -> PodAssessment | None:
    terminated = _terminated(view.connector)
    if terminated is None:
        return None
    code = terminated.exitCode
    if terminated.reason != "OOMKilled":
        return PodAssessment(exit_code=code, error=_deferred_oom(view))
    connector = view.container(view.main)
    resources = connector.resources if connector else None
    limit = (resources.limits if resources else None) or {}
    return PodAssessment(
        exit_code=code,
        error=ConnectorCrashed(
            f"{view.where}: the {_which(view.main)} was OOMKilled (memory limit "
            f"{limit.get('memory', 'unset')}); raise `resources: {{memory: ...}}` or "
            "`kubernetes.resources.limits.memory`",
            exit_code=code,
        ),
    )


def _deferred_oom(view: _PodView) -> FerryError | None:
    for container in view.status.containerStatuses or []:
        terminated = _terminated(container)
        if container.name in view.deferred and terminated and terminated.reason == "OOMKilled":
            return ConnectorCrashed(
                f"{view.where}: the {container.name} container was OOMKilled; raise "
                f"{OOM_HINTS[container.name]}"
            )
    return None


def _which(name: str) -> str:
    """How a message names a container: the connector, a single pod's source, destination or
    pump container, or a sidecar."""
    if name == CONNECTOR_CONTAINER:
        return "connector"
    return f"{name} container" if name in OOM_HINTS else f"{name} sidecar"


def _deletion(view: _PodView, deleted: bool) -> PodAssessment | None:
    if deleted:
        return _crashed(
            f"{view.where} was deleted while the connector ran (by someone else, a node drain or "
            "an eviction); committed state is kept, the next attempt resumes from it"
        )
    if view.being_deleted:
        return _crashed(
            f"{view.where} is being deleted while the connector runs (by someone else, a node "
            "drain or an eviction)"
        )
    return None


def _stopped_by_kubernetes(view: _PodView) -> PodAssessment | None:
    if view.reason == "Evicted":
        return _crashed(f"{view.where} was evicted: {view.message}")
    if view.reason == "DeadlineExceeded":
        deadline = view.spec.activeDeadlineSeconds if view.spec else None
        return _crashed(
            f"{view.where}: DeadlineExceeded: it ran longer than activeDeadlineSeconds "
            f"({deadline}s) and was stopped; raise kubernetes.active_deadline_seconds"
        )
    return None


def _container_problem(view: _PodView) -> PodAssessment | None:
    """An image that cannot be pulled, a container that cannot be created, a failed init
    container or an OOMKilled sidecar."""
    for init, statuses in (
        (True, view.status.initContainerStatuses),
        (False, view.status.containerStatuses),
    ):
        for container in statuses or []:
            spec = view.container(container.name, init)
            image = (spec.image if spec else None) or container.image or "?"
            found = _waiting_problem(view, container, image)
            if found is None and container.name != view.main:
                found = _sidecar_ended(view, container, init)
            if found is not None:
                return found
    return None


def _waiting_problem(
    view: _PodView, container: ContainerStatus, image: str
) -> PodAssessment | None:
    waiting = container.state.waiting if container.state else None
    if waiting is None:
        return None
    reason, message = waiting.reason or "", _message(waiting.message)
    if reason in PULL_ERRORS:
        return PodAssessment(
            error=ImageUnavailable(
                f"{view.where}: the {_which(container.name)} image {image} cannot be pulled "
                f"({reason}: {message}); check the image name, the registry and "
                "kubernetes.image_pull_secrets"
            )
        )
    if reason in CONFIG_ERRORS:
        return PodAssessment(
            error=RuntimeUnavailable(
                f"{view.where}: container {container.name} cannot be created ({reason}: {message})"
            )
        )
    return None


def _sidecar_ended(view: _PodView, container: ContainerStatus, init: bool) -> PodAssessment | None:
    terminated = _terminated(container)
    if terminated is None:
        return None
    name, code, reason = container.name, terminated.exitCode, terminated.reason or ""
    if init and code != 0:
        return _crashed(
            f"{view.where}: init container {name} failed (exit code {code}, "
            f"{reason or 'no reason'}): {_message(terminated.message)}"
        )
    if reason == "OOMKilled" and name not in view.deferred:
        hint = OOM_HINTS.get(name, "kubernetes.sidecar_resources.limits.memory")
        return _crashed(f"{view.where}: the {_which(name)} was OOMKilled; raise {hint}")
    return None


def _pod_ended(view: _PodView) -> PodAssessment | None:
    if view.phase == "Failed":
        return _crashed(f"{view.where} failed ({view.reason or 'no reason'}): {view.message}")
    if view.phase == "Succeeded":
        return _crashed(f"{view.where} succeeded but reported no connector exit code")
    return None


def _progress(view: _PodView) -> PodAssessment:
    """Whether the connector runs and the pod is scheduled, and why not yet."""
    state = view.connector.state if view.connector else None
    running = bool(state and state.running) or view.phase == "Running"
    on_node = bool(view.spec and view.spec.nodeName) or bool(view.status.containerStatuses)
    note = None
    conditions = [c for c in view.status.conditions or [] if c.type == "PodScheduled"]
    for condition in conditions:
        on_node = on_node or condition.status == "True"
        if condition.status == "False":
            note = (
                f"{view.where} is not scheduled yet ({condition.reason or ''}: "
                f"{condition.message or ''})"
            )
    return PodAssessment(running=running, note=note, scheduled=on_node or running)


# --- the runtime --------------------------------------------------------------------------------


def is_digest_pinned(image: str) -> bool:
    """`repo@sha256:<64 hex digits>` (a tag before the digest is allowed and ignored by nodes)."""
    return _DIGEST_PINNED.search(image) is not None


def relay_host(settings: KubernetesSettings, environ: Mapping[str, str] | None = None) -> str:
    """Where pods reach ferry: relay_host option, FERRY_RELAY_HOST, FERRY_POD_IP; else an error."""
    env = os.environ if environ is None else environ
    if settings.relay_host:
        return settings.relay_host
    for variable in (ENV_RELAY_HOST, ENV_POD_IP):
        host = env.get(variable)
        if host:
            check_relay_host(host, variable)
            return host
    raise ConfigError(
        "Kubernetes pods must reach ferry's relay port, but no address is configured: set "
        f"`kubernetes: {{relay_host: ...}}` in the connector block or {ENV_RELAY_HOST} (an "
        f"address of this machine the cluster can reach), or, when ferry runs in a pod, "
        f"{ENV_POD_IP} from the downward API (status.podIP; see deploy/)"
    )


def status_of(error: BaseException) -> tuple[int, str] | None:
    """HTTP status code and the API's message of a failed call; None if no response came.

    lightkube raises ApiError only when the response's Content-Type is exactly
    application/json; with a charset or through some proxies it is a bare HTTPStatusError.
    """
    if isinstance(error, ApiError):
        status = error.status
        detail = f"{status.reason or ''}: {status.message or error}".strip(": ")
        return int(status.code or error.response.status_code), detail
    if isinstance(error, httpx2.HTTPStatusError):
        response = error.response
        detail = response.reason_phrase or ""
        try:
            body = response.json()
        except Exception:
            body = None
        if isinstance(body, dict) and body.get("message"):
            detail = f"{body.get('reason') or detail}: {body['message']}"
        return response.status_code, detail
    return None


def api_error(action: str, error: BaseException) -> FerryError:
    """A FerryError a user can act on for a failed API call."""
    found = status_of(error)
    if found is not None:
        code, detail = found
        if code in (401, 403):
            return RuntimeUnavailable(
                f"Kubernetes refused to {action} ({code} {detail}); check the service account's "
                "RBAC (deploy/rbac.yaml lists what ferry needs) or your kubeconfig's credentials"
            )
        if code in (400, 422):
            return ConfigError(f"Kubernetes rejected ferry's request to {action}: {detail}")
        return RuntimeUnavailable(f"Kubernetes could not {action} ({code} {detail})")
    if isinstance(error, httpx2.HTTPError | OSError):
        return RuntimeUnavailable(f"cannot reach the Kubernetes API to {action}: {error}")
    return RuntimeUnavailable(f"Kubernetes could not {action}: {error}")


def is_not_found(error: BaseException) -> bool:
    found = status_of(error)
    return found is not None and found[0] == 404


def load_config() -> KubeConfig:
    """The in-cluster service account's config, else KUBECONFIG's (or ~/.kube/config's)."""
    try:
        return KubeConfig.from_env()
    except (KubeConfigError, OSError, KeyError, ValueError) as e:
        raise RuntimeUnavailable(
            "no Kubernetes configuration: ferry uses the in-cluster service account when it runs "
            "in a pod, else KUBECONFIG (or ~/.kube/config); "
            f"loading it failed: {e}"
        ) from None


class KubernetesPod:
    """One pod of one run (a PodBackend)."""

    main_container = CONNECTOR_CONTAINER  # whose exit code is the pod's result
    deferred_containers: frozenset[str] = frozenset()  # see assess_pod

    def __init__(
        self, client: AsyncClient, manifests: PodManifests, schedule_timeout: float
    ) -> None:
        self.client = client
        self.manifests = manifests
        self.schedule_timeout = schedule_timeout
        self.name = manifests.name
        self.namespace = manifests.namespace
        self.description = f"pod {self.name} (namespace {self.namespace})"
        self.deleting = False
        self._removed = False
        self._remove_lock = asyncio.Lock()
        self._noted: set[str] = set()
        self._running_seen = False

    async def launch(self) -> None:
        """Secret, Pod, then the Secret's ownerReference to the Pod."""
        has_secret = self.manifests.has_files
        if has_secret:
            try:
                await self.client.create(self.manifests.secret)
            except Exception as e:
                raise api_error(f"create the Secret {self.name} in {self.namespace}", e) from None
        try:
            created = await self.client.create(self.manifests.pod)
        except Exception as e:
            raise api_error(f"create the pod {self.name} in {self.namespace}", e) from None
        uid = created.metadata.uid if created.metadata is not None else None
        if has_secret and uid:
            try:
                await self.client.patch(
                    Secret,
                    self.name,
                    secret_owner_patch(self.name, uid),
                    namespace=self.namespace,
                    patch_type=PatchType.MERGE,
                )
            except Exception as e:  # the pod runs anyway; remove() deletes the Secret
                logger.warning(
                    "%s: could not make the pod own its Secret: %s",
                    self.description,
                    api_error("patch the Secret", e),
                )

    async def wait_connector(self, on_running: Callable[[], None]) -> int:
        """The connector's exit code; fails when the pod is not on a node by the schedule timeout
        (an unschedulable pod would otherwise wait for activeDeadlineSeconds, or forever)."""
        guard = asyncio.timeout(self.schedule_timeout)
        try:
            async with guard:
                return await self._watch_connector(on_running, guard)
        except TimeoutError:
            if not guard.expired():
                raise
            why = "; ".join(sorted(self._noted)) or "no scheduling event was seen"
            raise RuntimeUnavailable(
                f"{self.description} was not scheduled within {self.schedule_timeout:g}s ({why});"
                " check node capacity against its resource requests, nodeSelector, tolerations"
                " and affinity, or raise kubernetes.schedule_timeout_seconds"
            ) from None

    async def _watch_connector(
        self, on_running: Callable[[], None], schedule_guard: asyncio.Timeout
    ) -> int:
        failures = 0
        while True:
            try:
                async for event, obj in self.client.watch(
                    Pod, namespace=self.namespace, fields={"metadata.name": self.name}
                ):
                    failures = 0
                    code = self._observe(event, obj, on_running, schedule_guard)
                    if code is not None:
                        return code
            except (FerryError, asyncio.CancelledError):
                raise
            except Exception as e:
                failures += 1
                await self._before_watching_again(e, failures)
                continue
            # The server ended the watch without an error: look at the pod and watch again.
            await asyncio.sleep(WATCH_RETRY_SECONDS[0])

    def _observe(
        self,
        event: str,
        pod: Pod,
        on_running: Callable[[], None],
        schedule_guard: asyncio.Timeout,
    ) -> int | None:
        """Act on one watch event: the connector's exit code once known, else None."""
        if pod.metadata is None or pod.metadata.name != self.name:
            return None
        verdict = assess_pod(
            pod,
            deleted=event == "DELETED",
            deleting=self.deleting,
            main=self.main_container,
            deferred=self.deferred_containers,
        )
        if verdict.error is not None:
            raise verdict.error
        if verdict.exit_code is not None:
            return verdict.exit_code
        if verdict.scheduled:
            schedule_guard.reschedule(None)
        if verdict.running and not self._running_seen:
            self._running_seen = True
            on_running()
        if verdict.note and verdict.note not in self._noted:
            self._noted.add(verdict.note)
            logger.warning("%s", verdict.note)
        if event == "DELETED":
            raise ConnectorCrashed(f"{self.description} was deleted")
        return None

    async def _before_watching_again(self, error: Exception, failures: int) -> None:
        """Wait after the watch failed `failures` times in a row; raise when retrying is futile."""
        failure = api_error(f"watch {self.description}", error)
        found = status_of(error)
        if failures > 20 or (found is not None and found[0] in (401, 403)):
            raise failure from None
        delay = WATCH_RETRY_SECONDS[min(failures - 1, len(WATCH_RETRY_SECONDS) - 1)]
        logger.warning("%s; retrying in %gs", failure, delay)
        await asyncio.sleep(delay)

    async def stop(self, grace: float) -> None:
        self.deleting = True
        await self._delete_pod(math.ceil(grace))

    async def _delete_pod(self, grace: int | None) -> None:
        try:
            await self.client.delete(
                Pod,
                self.name,
                namespace=self.namespace,
                grace_period=grace,
                cascade=CascadeType.BACKGROUND,
            )
        except Exception as e:
            if not is_not_found(e):
                logger.warning("%s: %s", self.description, api_error("delete the pod", e))

    async def remove(self) -> None:
        async with self._remove_lock:
            if self._removed:
                return
            self._removed = True
            self.deleting = True
            await self._delete_pod(None)
            if self.manifests.has_files:
                try:  # normally garbage-collected with the pod; harmless if already gone
                    await self.client.delete(Secret, self.name, namespace=self.namespace)
                except Exception as e:
                    if not is_not_found(e):
                        logger.warning(
                            "%s: %s", self.description, api_error("delete the Secret", e)
                        )


class KubernetesRuntime:
    """Runs connectors as Kubernetes pods (implements Runtime)."""

    name = "kubernetes"

    def __init__(
        self, *, config: KubeConfig | None = None, sidecar_image: str | None = None
    ) -> None:
        self._config = config
        self.sidecar_image = resolve_sidecar_image(sidecar_image)
        self._client: AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._entrypoints: dict[str, str | None] = {}

    async def client(self) -> AsyncClient:
        async with self._lock:
            if self._client is None:
                config = self._config or load_config()
                try:
                    self._client = AsyncClient(config=config, field_manager=FIELD_MANAGER)
                except Exception as e:
                    raise RuntimeUnavailable(f"cannot set up the Kubernetes client: {e}") from None
            return self._client

    @property
    def default_namespace(self) -> str:
        client = self._client
        namespace = getattr(client, "namespace", None) if client is not None else None
        return str(namespace or "default")

    async def start(self, invocation: ConnectorInvocation, log: LogSink) -> PodProcess:
        ref = invocation.connector
        settings = ref.options.kubernetes
        host = relay_host(settings)
        client = await self.client()
        namespace = settings.namespace or self.default_namespace
        entrypoint = None
        if ref.options.entrypoint and ref.options.entrypoint.strip() == "auto":
            entrypoint = await self.auto_entrypoint(
                client, ref.target, namespace, settings.image_pull_secrets
            )
        listener = await shared_listener()

        def make_pod(registration: RelayRegistration) -> KubernetesPod:
            manifests = build_manifests(
                invocation,
                token=registration.token,
                endpoint=listener.endpoint(host),
                settings=settings,
                namespace=namespace,
                entrypoint=entrypoint,
                extra_labels=owner_labels(),
                sidecar_image=self.sidecar_image,
            )
            return KubernetesPod(client, manifests, settings.schedule_timeout_seconds)

        return await start_pod(invocation, log, listener, make_pod)

    async def auto_entrypoint(
        self, client: AsyncClient, image: str, namespace: str, pull_secrets: Sequence[str]
    ) -> str | None:
        """`entrypoint: auto`: the entrypoint derived from the image's registry config, when the image has no
        AIRBYTE_ENTRYPOINT; credentials from the pod's imagePullSecrets, then the local docker
        config. On failure ferry goes on without an override (the wrapper then needs
        AIRBYTE_ENTRYPOINT and says so)."""
        if image in self._entrypoints:
            return self._entrypoints[image]
        secrets = []
        for name in pull_secrets:
            try:
                secrets.append((await client.get(Secret, name, namespace=namespace)).to_dict())
            except Exception as e:
                logger.warning(
                    "image pull secret %s: %s", name, api_error(f"read Secret {name}", e)
                )
        documents = docker_configs_from_pull_secrets(secrets)
        try:
            config = await fetch_image_config(image, docker_configs=documents)
        except FerryError as e:
            logger.warning(
                "%s: entrypoint: auto could not read the image's config from its registry (%s); "
                "relying on the image's AIRBYTE_ENTRYPOINT",
                image,
                e,
            )
            return None
        entrypoint = derive_entrypoint(config)
        if entrypoint is not None:
            logger.info(
                "%s has no AIRBYTE_ENTRYPOINT; entrypoint: auto runs what its registry config says: %s",
                image,
                entrypoint,
            )
        self._entrypoints[image] = entrypoint
        return entrypoint

    async def fingerprint(self, ref: ConnectorRef) -> str | None:
        """Only an image pinned by digest names fixed code: a tag may move on the registry (and
        nodes may hold different images under it)."""
        if not is_digest_pinned(ref.target):
            return None
        return fingerprint_of(ref, image=ref.target, entrypoint=ref.options.entrypoint)

    async def sweep_orphans(self) -> list[str]:
        return []  # pods stop themselves once ferry is gone (heartbeat); `ferry gc` removes them

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
