"""The single-pod layout: one pod holds the source, the destination and ferry's pump (pure).

`kubernetes: {layout: single-pod}` in a connection file (or `ferry sync --layout single-pod`)
runs a sync as ONE pod, Airbyte 1.x's replication-pod layout:

- no init container: the FIFOs in the pod's emptyDir (its volume name is unique per pod:
  podman's emptyDirs are global by name), `source/{stdout,stderr}` and
  `destination/{stdin,stdout,stderr}`, are made by the pump and the wrappers, whichever comes
  first (directories 0777, FIFOs 0666, for containers running as different users; the pump
  makes the emptyDir itself 0777, which podman creates 0755);
- `source` and `destination` run their images under ferry's wrapper (`eval "$AIRBYTE_ENTRYPOINT"`,
  or the `entrypoint:` override), each with its own directory of that emptyDir;
- `pump` runs `python -m ferry.engine.pod_pump` from the ferry image (FERRY_IMAGE): the same
  routing as a local sync between the FIFOs; only its control stream leaves the pod, over
  ferry's one relay port with the pod's token;
- no heartbeat sidecar: the pump holds the control connection and polls ferry's heartbeat
  endpoint itself (`FERRY_PUMP_HEARTBEAT`); when ferry is gone it stops both connectors and
  reports its exit code as the sidecar would (one container less to start: ~0.07 s of
  `podman kube play`, and one less to wait for at the end).

Every generated name fits a DNS label (63 characters): the pod's name leaves room for the
names made from it (`<pod>-io`, the emptyDir; see `manifests.named_pod`).

One Secret (owned by the pod, as in the per-connector layout) holds `<role>-<file>.json` for the
config, catalog and state of both connectors. Each connector container mounts only its own keys
(a volume of the Secret with `items:`), the pump only the source's catalog: on Kubernetes the
source cannot read the destination's credentials, nor the reverse. Podman 4.3 writes all the
volumes of one secret into a single podman volume, so there every container still sees every
key. Every container has requests and limits.

The connection-level `kubernetes:` block holds `layout`, `ferry_image`, `pump_resources` and any
pod-level key of a connector's block (namespace, labels, node_selector, host_network ...); a
connector's own block may only set what applies to its container there (`resources`,
`container_security_context`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from lightkube.models.core_v1 import (
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    SecurityContext,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from ferry.errors import ConfigError
from ferry.relay import (
    IO_DIR,
    HeartbeatSettings,
    RelayEndpoint,
    check_portable,
    io_path,
    wrapper_command,
)
from ferry.runtimes.base import ConnectorInvocation, protocol_args
from ferry.runtimes.options import KubernetesSettings, check_requests_within_limits
from ferry.runtimes.pods.layout import PodPair, container_settings
from ferry.runtimes.pods.manifests import (
    ANNOTATION_PREFIX,
    DRY_RUN_ENDPOINT,
    DRY_RUN_TOKEN,
    FILES_DIR,
    IO_VOLUME_SUFFIX,
    KUBERNETES_PULL_POLICIES,
    PodManifests,
    _connector_resources,
    _host_volumes,
    _pod_spec,
    _user_env,
    as_model,
    dry_run_documents,
    files_secret,
    for_podman,
    merge_resources,
    named_pod,
    owner_annotations,
    pod_labels,
    redacted,
    resource_requirements,
    secret_volume,
    with_wrapper_env,
)

PUMP_CONTAINER = "pump"
ROLES = ("source", "destination")
PUMP_COMMAND = ("python", "-m", "ferry.engine.pod_pump")
DEFAULT_PUMP_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"cpu": "2", "memory": "512Mi"},
}


def secret_key(role: str, file: str) -> str:
    return f"{role}-{file}.json"


def _files_mounts(
    volume: str, secret: str, keys: Sequence[str], volumes: list[Volume]
) -> list[VolumeMount]:
    """The mount of the Secret's `keys` only (none without keys); its volume joins `volumes`."""
    if not keys:
        return []
    volumes.append(secret_volume(volume, secret, keys))
    return [VolumeMount(name=volume, mountPath=FILES_DIR, readOnly=True)]


def _container(
    name: str,
    image: str,
    command: Sequence[str],
    resources: Mapping[str, Mapping[str, str]],
    mounts: Sequence[VolumeMount],
    *,
    pull: str = "IfNotPresent",
    security: Mapping[str, Any] | None = None,
) -> Container:
    return Container(
        name=name,
        image=image,
        imagePullPolicy=pull,
        command=list(command),
        resources=resource_requirements(resources),
        volumeMounts=list(mounts),
        terminationMessagePolicy="FallbackToLogsOnError",
        securityContext=as_model(security, SecurityContext),
    )


def _connector_container(
    invocation: ConnectorInvocation,
    entrypoint: str | None,
    mounts: list[VolumeMount],
    pod_settings: KubernetesSettings,
    grace: float,
) -> tuple[Container, list[Volume]]:
    """The container of one connector under the wrapper, and its host volumes."""
    ref = invocation.connector
    options = ref.options
    role = invocation.labels.role
    own = container_settings(invocation)
    if entrypoint is None and options.entrypoint and options.entrypoint.strip() != "auto":
        entrypoint = options.entrypoint
    paths = {name: f"{FILES_DIR}/{secret_key(role, name)}" for name in invocation.files}
    args = [*ref.args, *protocol_args(invocation.verb, paths)]
    try:
        check_portable(args, f"the {role}'s arguments")
        wrapper = wrapper_command(
            args,
            image=ref.target,
            reads_stdin=invocation.reads_stdin,
            entrypoint=entrypoint,
            io_dir=io_path(role),
            grace=grace,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    resources = _connector_resources(options, own)
    host_specs, host_mounts = _host_volumes(options.volumes)
    for volume in host_specs:
        volume.name = f"{role}-{volume.name}"
    for mount in host_mounts:
        mount.name = f"{role}-{mount.name}"
    spec = _container(
        role,
        ref.target,
        wrapper.argv,
        resources,
        mounts + host_mounts,
        pull=KUBERNETES_PULL_POLICIES[options.pull],
        security=own.container_security_context or pod_settings.container_security_context,
    )
    spec.env = with_wrapper_env(_user_env(options.env, f"{role}.env"), wrapper.env)
    return spec, host_specs


def build_single_pod(
    pair: PodPair,
    *,
    token: str,
    endpoint: RelayEndpoint,
    namespace: str = "default",
    entrypoints: Mapping[str, str | None] | None = None,
    extra_labels: Mapping[str, str] | None = None,
    heartbeat: HeartbeatSettings | None = None,
    grace: float = 10.0,
    suffix: str | None = None,
) -> PodManifests:
    """The Secret and Pod running `pair` in one pod (see the module docstring)."""
    settings = pair.layout.settings
    namespace = settings.namespace or namespace
    connection = pair.labels.connection
    suffix = suffix or uuid.uuid4().hex[:8]
    name = named_pod(connection, f"ferry-{{}}-pod-{suffix}")
    io_volume = f"{name}{IO_VOLUME_SUFFIX}"
    io_mount = VolumeMount(name=io_volume, mountPath=IO_DIR)
    pod_invocation = replace(pair.source, labels=pair.labels)
    data = {
        secret_key(invocation.labels.role, file): content
        for invocation in pair.invocations()
        for file, content in invocation.files.items()
    }

    containers: list[Container] = []
    volumes = [Volume(name=io_volume, emptyDir=EmptyDirVolumeSource())]
    for invocation in pair.invocations():
        role = invocation.labels.role
        keys = [secret_key(role, file) for file in invocation.files]
        files_mounts = _files_mounts(f"{role}-files", name, keys, volumes)
        connector, host_specs = _connector_container(
            invocation,
            (entrypoints or {}).get(role),
            [io_mount, *files_mounts],
            settings,
            grace,
        )
        containers.append(connector)
        volumes += host_specs
    pump_resources = merge_resources(DEFAULT_PUMP_RESOURCES, pair.layout.pump_resources)
    check_requests_within_limits(pump_resources, "kubernetes.pump_resources")
    pump_catalog = secret_key("source", "catalog")
    pump_keys = [pump_catalog] if pump_catalog in data else []
    pump = _container(
        PUMP_CONTAINER,
        pair.layout.image(),
        PUMP_COMMAND,
        pump_resources,
        [io_mount, *_files_mounts("pump-files", name, pump_keys, volumes)],
        security=settings.container_security_context,
    )
    beat = heartbeat or HeartbeatSettings()
    pump_env = {
        "FERRY_PUMP_DIR": IO_DIR,
        "FERRY_PUMP_CATALOG": f"{FILES_DIR}/{pump_catalog}",
        "FERRY_PUMP_RELAY": f"{endpoint.host}:{endpoint.port}",
        "FERRY_PUMP_TOKEN": token,
        "FERRY_PUMP_HEARTBEAT": f"{beat.interval:g} {beat.probe_timeout} {beat.max_failures}",
        "PYTHONUNBUFFERED": "1",
    }
    pump.env = [EnvVar(name=key, value=value) for key, value in pump_env.items()]
    containers.append(pump)
    # No init container: the pump and the wrappers make the FIFOs, whichever comes first (one
    # container less to run before the others start: 0.35 s of `podman kube play`).
    spec = _pod_spec(settings, None, containers, volumes)
    labels = pod_labels(pod_invocation, extra_labels, settings.labels)
    annotations = {**settings.annotations, **owner_annotations(pod_invocation, extra_labels)}
    for invocation in pair.invocations():
        annotations[f"{ANNOTATION_PREFIX}{invocation.labels.role}-image"] = (
            invocation.connector.target
        )
    pod = Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=labels, annotations=annotations),
        spec=spec,
    )
    owners = owner_annotations(pod_invocation, extra_labels)
    secret = files_secret(name, namespace, data, labels, owners)
    files = {key: f"{FILES_DIR}/{key}" for key in data}
    return PodManifests(name, namespace, secret, pod, io_volume, files)


def render_pair_dry_run(pair: PodPair, *, runtime: str = "kubernetes") -> str:
    """The single pod's Secret and Pod as YAML, secret values redacted (see `render_dry_run`)."""
    manifests = build_single_pod(pair, token=DRY_RUN_TOKEN, endpoint=DRY_RUN_ENDPOINT)
    if runtime == "podman":
        manifests = for_podman(
            manifests, host_network=pair.layout.settings.host_network is not False
        )
    documents = [
        "# ferry dry run: the single pod ferry would create (Secret values and environment values "
        "redacted;\n# the relay token and endpoint are placeholders chosen when ferry runs)\n",
        *dry_run_documents(redacted(manifests)),
    ]
    return "---\n".join(documents)
