"""The Secret and Pod of one connector run, for Kubernetes and `podman kube play` alike (pure).

For one ConnectorInvocation, `build_manifests` returns lightkube's models (a `Secret` and a
`Pod` resource: Kubernetes creates them as they are, `podman kube play` reads their dicts):

- a **Secret** named like the pod, holding `config.json`, `catalog.json`, `state.json` (those the
  invocation has). It is created before the pod and then owned by it (`secret_owner_patch`, once
  the pod's uid is known), so deleting the pod deletes it;
- a **Pod** with `restartPolicy: Never`:
  - init container `ferry-init`: makes the FIFOs in the pod's own emptyDir (volume name unique per
    pod: podman's emptyDirs are named volumes, global by name) and makes it writable for
    connectors running as another user;
  - `connector`: the image, running ferry's wrapper (`wrapper_command`: the protocol arguments
    are positional parameters, the entrypoint comes from AIRBYTE_ENTRYPOINT or ferry's override),
    config files mounted read-only from the Secret at /ferry/files;
  - sidecars from the sidecar image: `relay-stdout`, `relay-stderr`, `relay-stdin` (destinations
    only) carry the FIFOs to ferry's ONE relay port with the per-connector token, `heartbeat`
    polls ferry and stops the connector when ferry is gone;
  - `ferry.*` labels (run, connection, role, owner, host, pid), user labels and annotations,
    requests AND limits on every container (defaults that pass a ResourceQuota), nodeSelector,
    tolerations, affinity, imagePullSecrets, serviceAccountName, securityContext,
    activeDeadlineSeconds, priorityClassName.

No generated command, argument or environment value contains `$(` or `$$` (Kubernetes rewrites
both, Podman 4.3 does neither): the relay layer checks its own, this module checks the rest.

The `kubernetes:` block of a connector (`ferry.runtimes.options.KubernetesSettings`) was checked
when the connection file was read. `render_dry_run` prints the manifests as YAML with the
Secret's values redacted.
"""

from __future__ import annotations

import base64
import copy
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import msgspec
import yaml
from lightkube.models.core_v1 import (
    Affinity,
    Container,
    EmptyDirVolumeSource,
    EnvVar,
    HostPathVolumeSource,
    KeyToPath,
    LocalObjectReference,
    PodSecurityContext,
    PodSpec,
    ResourceRequirements,
    SecretVolumeSource,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod, Secret

from ferry.errors import ConfigError, InternalError
from ferry.relay import (
    IO_DIR,
    SIDECAR_IMAGE,
    STDERR,
    STDIN,
    STDOUT,
    HeartbeatSettings,
    RelayEndpoint,
    check_portable,
    sidecar_commands,
    unsafe_for_kubernetes,
    wrapper_command,
)
from ferry.runtimes.base import ConnectorInvocation, protocol_args
from ferry.runtimes.options import (
    MANAGED_BY_LABEL,
    PULL_POLICIES,
    Amount,
    ConnectorOptions,
    KubernetesSettings,
    amount,
    check_requests_within_limits,
    cpu_quantity,
    memory_quantity,
)

FILES_DIR = "/ferry/files"
CONNECTOR_CONTAINER = "connector"
INIT_CONTAINER = "ferry-init"
HEARTBEAT_CONTAINER = "heartbeat"
MANAGED_BY = "ferry"
# Annotations carrying the full (unsanitised) owner labels, for gc: label values are limited.
ANNOTATION_PREFIX = "ferry.dev/"
REDACTED = "<redacted>"

# The `pull:` policies (ferry.runtimes.options.PULL_POLICIES) in Kubernetes' words.
KUBERNETES_PULL_POLICIES = dict(
    zip(PULL_POLICIES, ("Never", "IfNotPresent", "Always"), strict=True)
)

# Defaults chosen to pass a ResourceQuota that requires requests and limits on every container,
# without throttling the relays (Airbyte's 0.2 CPU sidecars were a bottleneck).
DEFAULT_CONNECTOR_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
DEFAULT_SIDECAR_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "32Mi"},
    "limits": {"cpu": "1", "memory": "128Mi"},
}
DEFAULT_SMALL_RESOURCES: dict[str, dict[str, str]] = {  # init and heartbeat containers
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "100m", "memory": "32Mi"},
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def merge_resources(
    base: Mapping[str, Mapping[str, str]], override: Mapping[str, Mapping[str, Amount]]
) -> dict[str, dict[str, str]]:
    """`base` with `override`'s amounts replacing its own, per requests/limits and resource."""
    merged = {kind: dict(base.get(kind, {})) for kind in ("requests", "limits")}
    for kind, amounts in override.items():
        merged.setdefault(kind, {}).update({name: str(q) for name, q in amounts.items()})
    return merged


# --- names and labels ---------------------------------------------------------------------------


def _dns_part(text: str, size: int) -> str:
    part = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return part[:size].strip("-") or "x"


# What volume names append to their pod's name; a pod's name leaves room for the longest, so
# that every name stays a DNS label (63 characters at most).
IO_VOLUME_SUFFIX = "-io"
FILES_VOLUME_SUFFIX = "-files"
_SUFFIX_ROOM = max(len(IO_VOLUME_SUFFIX), len(FILES_VOLUME_SUFFIX))


def named_pod(connection: str, pattern: str) -> str:
    """`pattern` (with one `{}`) filled with as much of `connection` as a pod name can hold
    (a DNS label, with room for the names made from it)."""
    room = 63 - _SUFFIX_ROOM - len(pattern.format(""))
    return pattern.format(_dns_part(connection, room))


def pod_name(invocation: ConnectorInvocation, suffix: str | None = None) -> str:
    """`ferry-<connection>-<role>-<verb>-<8 hex>`: a DNS label (<= 63 with any volume suffix),
    unique per run."""
    labels = invocation.labels
    suffix = suffix or uuid.uuid4().hex[:8]
    role = {"source": "src", "destination": "dst", "connector": "cmd"}.get(labels.role, "cmd")
    name = named_pod(labels.connection, f"ferry-{{}}-{role}-{invocation.verb}-{suffix}")
    if not _DNS_LABEL.match(name):  # pragma: no cover - guaranteed by construction
        raise InternalError(f"generated an invalid pod name {name!r}")
    return name


def label_value(text: str) -> str:
    """`text` made a valid label value: disallowed characters become '-', at most 63 characters
    (the end is kept: owner ids end with the pid and a random part)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[-63:]
    return value.strip("-_.")


def pod_labels(
    invocation: ConnectorInvocation,
    extra: Mapping[str, str] | None = None,
    user: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The `ferry.*` labels (sanitised as label values), user labels, managed-by."""
    raw = {**invocation.labels.as_labels(), **(extra or {})}
    labels = dict(user or {})
    labels.update({key: label_value(value) for key, value in raw.items()})
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    return labels


def owner_annotations(
    invocation: ConnectorInvocation, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The `ferry.*` labels unabridged, as `ferry.dev/<label>` annotations (gc reads them)."""
    raw = {**invocation.labels.as_labels(), **(extra or {})}
    return {ANNOTATION_PREFIX + key: value for key, value in raw.items()}


def labels_for_gc(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, str]:
    """The `ferry.*` labels of a pod/secret, with the full values of its annotations winning."""
    merged = {k: v for k, v in labels.items() if k.startswith("ferry.")}
    for key, value in annotations.items():
        if key.startswith(ANNOTATION_PREFIX):
            merged[key[len(ANNOTATION_PREFIX) :]] = value
    return merged


# --- the manifests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodManifests:
    """The Secret and Pod of one run. `io_volume` is the emptyDir's (unique) volume name."""

    name: str
    namespace: str
    secret: Secret
    pod: Pod
    io_volume: str
    files: dict[str, str]  # file name (config/catalog/state) -> path in the connector container

    @property
    def secret_name(self) -> str:
        return self.name  # the Secret is named like its pod

    @property
    def spec(self) -> PodSpec:
        """The pod's spec (always set by the builders)."""
        if self.pod.spec is None:  # pragma: no cover - guaranteed by construction
            raise InternalError(f"pod {self.name} has no spec")
        return self.pod.spec

    @property
    def labels(self) -> dict[str, str]:
        metadata = self.pod.metadata
        return dict(metadata.labels or {}) if metadata is not None else {}

    @property
    def has_files(self) -> bool:
        """Whether the Secret holds any file (else it is neither created nor mounted)."""
        return bool(self.secret.data)


def file_paths(files: Iterable[str]) -> dict[str, str]:
    return {name: f"{FILES_DIR}/{name}.json" for name in files}


def _init_script(reads_stdin: bool, io_dir: str) -> str:
    fifos = " ".join([STDOUT, STDERR] + ([STDIN] if reads_stdin else []))
    return (
        "umask 0\n"
        f"cd {io_dir} || exit 1\n"
        "chmod 0777 . 2>/dev/null\n"
        f"for f in {fifos}; do\n"
        '  [ -p "$f" ] || mkfifo -m 666 "$f" || {\n'
        f'    echo "ferry-init: cannot create the FIFO {io_dir}/$f (is the emptyDir writable by '
        'this user?)" >&2\n'
        "    exit 1\n"
        "  }\n"
        "done\n"
    )


def _user_env(env: Mapping[str, str], where: str) -> list[EnvVar]:
    out = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ConfigError(f"{where}: {name!r} is not a valid environment variable name")
        if unsafe_for_kubernetes(str(value)):
            raise ConfigError(
                f"{where}.{name}: the value contains '$(' or '$$', which Kubernetes rewrites in "
                "environment values and Podman does not; pass it in the connector's config instead"
            )
        out.append(EnvVar(name=name, value=str(value)))
    return out


def _host_volumes(volumes: Mapping[str, str]) -> tuple[list[Volume], list[VolumeMount]]:
    specs: list[Volume] = []
    mounts: list[VolumeMount] = []
    for index, (host, target) in enumerate(sorted(volumes.items())):
        if not posixpath.isabs(target) or not posixpath.isabs(host):
            raise ConfigError(
                f"volumes: {host!r} -> {target!r}: both must be absolute paths (host dir -> "
                "container path)"
            )
        name = f"ferry-host-{index}"
        specs.append(
            Volume(name=name, hostPath=HostPathVolumeSource(path=host, type="DirectoryOrCreate"))
        )
        mounts.append(VolumeMount(name=name, mountPath=target))
    return specs, mounts


def build_manifests(
    invocation: ConnectorInvocation,
    *,
    token: str,
    endpoint: RelayEndpoint,
    settings: KubernetesSettings | None = None,
    namespace: str = "default",
    entrypoint: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    heartbeat: HeartbeatSettings | None = None,
    grace: float = 10.0,
    suffix: str | None = None,
    sidecar_image: str = SIDECAR_IMAGE,
) -> PodManifests:
    """The Secret and Pod of `invocation`.

    `token`/`endpoint`: the relay registration and where pods reach ferry; `entrypoint` overrides
    the image's AIRBYTE_ENTRYPOINT (a shell command line; an explicit `entrypoint:` option that is
    not `auto` is used when this is None); `extra_labels`: more `ferry.*` labels (gc's owner
    labels); `grace`: the wrapper's TERM-to-KILL time when ferry is gone; `suffix`: the pod name's
    random part (for tests). Settings' namespace and sidecar image win over the arguments.
    """
    settings = settings or KubernetesSettings()
    namespace = settings.namespace or namespace
    layout = _PodCommon(
        name=pod_name(invocation, suffix),
        settings=settings,
        pull_policy=KUBERNETES_PULL_POLICIES[invocation.connector.options.pull],
        sidecar_image=settings.sidecar_image or sidecar_image,
    )
    paths = file_paths(invocation.files)
    connector, host_volumes = _connector_container(invocation, layout, paths, entrypoint, grace)
    sidecars = sidecar_commands(
        token=token, endpoint=endpoint, reads_stdin=invocation.reads_stdin, heartbeat=heartbeat
    )
    init_script = _init_script(invocation.reads_stdin, IO_DIR)
    init = layout.sidecar(INIT_CONTAINER, ["/bin/sh", "-c", init_script])
    check_portable(init.command or [], "the init container's command")
    containers = [connector] + [layout.sidecar(c, command) for c, command in sidecars.items()]
    volumes = [*layout.volumes(with_files=bool(paths)), *host_volumes]
    labels = pod_labels(invocation, extra_labels, settings.labels)
    owners = owner_annotations(invocation, extra_labels)
    annotations = {**settings.annotations, **owners}
    annotations[ANNOTATION_PREFIX + "image"] = invocation.connector.target
    pod = Pod(
        metadata=ObjectMeta(
            name=layout.name, namespace=namespace, labels=labels, annotations=annotations
        ),
        spec=_pod_spec(settings, [init], containers, volumes),
    )
    files = {f"{file}.json": data for file, data in invocation.files.items()}
    secret = files_secret(layout.name, namespace, files, labels, owners)
    return PodManifests(layout.name, namespace, secret, pod, layout.io_volume, paths)


def files_secret(
    name: str,
    namespace: str,
    files: Mapping[str, bytes],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> Secret:
    """The immutable Secret `name` holding `files` (file name -> content) for a pod to mount."""
    return Secret(
        type="Opaque",
        metadata=ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels), annotations=dict(annotations)
        ),
        immutable=True,
        data={key: base64.b64encode(content).decode("ascii") for key, content in files.items()},
    )


def _connector_container(
    invocation: ConnectorInvocation,
    layout: _PodCommon,
    paths: Mapping[str, str],
    entrypoint: str | None,
    grace: float,
) -> tuple[Container, list[Volume]]:
    """The connector's container under ferry's wrapper, and the host volumes it mounts."""
    ref = invocation.connector
    options = ref.options
    if entrypoint is None and options.entrypoint and options.entrypoint.strip() != "auto":
        entrypoint = options.entrypoint
    args = [*ref.args, *protocol_args(invocation.verb, paths)]
    check_portable(args, "the connector's arguments")
    wrapper = wrapper_command(
        args,
        image=ref.target,
        reads_stdin=invocation.reads_stdin,
        entrypoint=entrypoint,
        grace=grace,
    )
    resources = _connector_resources(options, layout.settings)
    connector = layout.container(CONNECTOR_CONTAINER, ref.target, wrapper.argv, resources)
    connector.env = with_wrapper_env(_user_env(invocation.environment, "env"), wrapper.env)
    host_volumes, host_mounts = _host_volumes(options.volumes)
    mounts = connector.volumeMounts or []
    if paths:
        mounts.append(VolumeMount(name=layout.files_volume, mountPath=FILES_DIR, readOnly=True))
    connector.volumeMounts = mounts + host_mounts
    return connector, host_volumes


def with_wrapper_env(user: Sequence[EnvVar], wrapper: Mapping[str, str]) -> list[EnvVar]:
    """The user's environment, then the wrapper's (which wins over a user's of the same name)."""
    kept = [item for item in user if item.name not in wrapper]
    return kept + [EnvVar(name=name, value=value) for name, value in wrapper.items()]


def resource_requirements(resources: Mapping[str, Mapping[str, str]]) -> ResourceRequirements:
    return ResourceRequirements(
        requests=dict(resources.get("requests", {})), limits=dict(resources.get("limits", {}))
    )


_Model = TypeVar("_Model")


def as_model(value: Mapping[str, Any] | None, model: type[_Model]) -> _Model | None:
    """A `kubernetes:` block object (checked against `model` when the options were read)."""
    return None if not value else msgspec.convert(value, model)


def _connector_resources(
    options: ConnectorOptions, settings: KubernetesSettings
) -> dict[str, dict[str, str]]:
    """The defaults, then the `resources:` option (its cpu a limit, its memory both), then the
    `kubernetes:` block's own requests/limits."""
    resources = merge_resources(DEFAULT_CONNECTOR_RESOURCES, {})
    if options.cpu:
        cpu = cpu_quantity(options.cpu, "resources.cpu")
        resources["limits"]["cpu"] = cpu
        request = resources["requests"]["cpu"]
        if amount("cpu", request, "resources.cpu") > amount("cpu", cpu, "resources.cpu"):
            resources["requests"]["cpu"] = cpu
    if options.memory:
        memory = memory_quantity(options.memory, "resources.memory")
        resources["limits"]["memory"] = memory
        resources["requests"]["memory"] = memory
    resources = merge_resources(resources, settings.resources)
    check_requests_within_limits(resources, "the connector's resources")
    return resources


@dataclass(frozen=True)
class _PodCommon:
    """What every container of one pod shares: its volumes, pull policy, security context."""

    name: str
    settings: KubernetesSettings
    pull_policy: str
    sidecar_image: str

    @property
    def io_volume(self) -> str:
        return f"{self.name}{IO_VOLUME_SUFFIX}"

    @property
    def files_volume(self) -> str:
        return f"{self.name}{FILES_VOLUME_SUFFIX}"

    def container(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        resources: Mapping[str, Mapping[str, str]],
    ) -> Container:
        return Container(
            name=name,
            image=image,
            imagePullPolicy=self.pull_policy,
            command=list(command),
            resources=resource_requirements(resources),
            volumeMounts=[VolumeMount(name=self.io_volume, mountPath=IO_DIR)],
            terminationMessagePolicy="FallbackToLogsOnError",
            securityContext=as_model(self.settings.container_security_context, SecurityContext),
        )

    def sidecar(self, name: str, command: Sequence[str]) -> Container:
        """The init container, a relay or the heartbeat: the sidecar image, its resources, and
        pulled only when missing even under `pull: always` (the connector's policy)."""
        small = name in (INIT_CONTAINER, HEARTBEAT_CONTAINER)
        defaults = DEFAULT_SMALL_RESOURCES if small else DEFAULT_SIDECAR_RESOURCES
        resources = merge_resources(defaults, {} if small else self.settings.sidecar_resources)
        if not small:
            check_requests_within_limits(resources, "kubernetes.sidecar_resources")
        spec = self.container(name, self.sidecar_image, command, resources)
        spec.imagePullPolicy = "IfNotPresent" if self.pull_policy == "Always" else self.pull_policy
        return spec

    def volumes(self, *, with_files: bool) -> list[Volume]:
        volumes = [Volume(name=self.io_volume, emptyDir=EmptyDirVolumeSource())]
        if with_files:
            volumes.append(secret_volume(self.files_volume, self.name))
        return volumes


def secret_volume(name: str, secret: str, keys: Sequence[str] | None = None) -> Volume:
    """The volume `name` mounting the Secret `secret`'s files read-only (only `keys` if given).

    `keys` become files of the same name; podman 4.3 honours them only per secret: it writes
    every volume of one secret into one podman volume named after it (all their keys together).
    """
    # `optional: false` spelled out: podman 4.3 dereferences it without a nil check.
    items = None if keys is None else [KeyToPath(key=key, path=key) for key in keys]
    source = SecretVolumeSource(secretName=secret, defaultMode=0o444, optional=False, items=items)
    return Volume(name=name, secret=source)


# The pod spec fields of the `kubernetes:` block's optional settings, set when present.
_OPTIONAL_POD_FIELDS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("active_deadline_seconds", "activeDeadlineSeconds", int),
    ("service_account_name", "serviceAccountName", str),
    ("node_selector", "nodeSelector", dict),
    ("tolerations", "tolerations", lambda items: [as_model(i, Toleration) for i in items]),
    ("affinity", "affinity", lambda value: as_model(value, Affinity)),
    (
        "image_pull_secrets",
        "imagePullSecrets",
        lambda names: [LocalObjectReference(name=n) for n in names],
    ),
    ("security_context", "securityContext", lambda value: as_model(value, PodSecurityContext)),
    ("priority_class_name", "priorityClassName", str),
    ("host_network", "hostNetwork", bool),
)


def _pod_spec(
    settings: KubernetesSettings,
    init: list[Container] | None,
    containers: list[Container],
    volumes: list[Volume],
) -> PodSpec:
    """The spec of a pod running `containers` once (`init` first, when given)."""
    optional = {
        field: spelled(value)
        for setting, field, spelled in _OPTIONAL_POD_FIELDS
        if (value := getattr(settings, setting))
    }
    return PodSpec(
        restartPolicy="Never",
        terminationGracePeriodSeconds=settings.termination_grace_period_seconds,
        enableServiceLinks=False,
        automountServiceAccountToken=settings.automount_service_account_token,
        initContainers=init,
        containers=containers,
        volumes=volumes,
        **optional,
    )


def secret_owner_patch(pod_name: str, pod_uid: str) -> Secret:
    """The (merge) patch making the Secret owned by its Pod (set once the pod's uid is known)."""
    owner = OwnerReference(
        apiVersion="v1",
        kind="Pod",
        name=pod_name,
        uid=pod_uid,
        controller=False,
        blockOwnerDeletion=False,
    )
    return Secret(metadata=ObjectMeta(ownerReferences=[owner]))


# --- Podman adaptation --------------------------------------------------------------------------


def podman_secret_pod(secret: str) -> str:
    """The pod a podman secret belongs to: it is named like the pod, or `<pod>.<volume>`."""
    return secret.split(".", 1)[0]


def podman_secrets(manifests: PodManifests) -> dict[str, dict[str, Any]]:
    """What `podman secret create` must hold for `podman kube play` to mount the files: secret
    name -> Secret document, one per Secret volume of the (`for_podman`) pod.

    Podman 4.3 reads a Secret volume from a podman secret holding a Secret document and writes
    its `data` values to the files AS THEY ARE (an inline `kind: Secret` would therefore mount
    base64 text): so `data` carries the plain file contents, only the volume's `items` if any.
    """
    data = {
        key: base64.b64decode(value).decode("utf-8")
        for key, value in (manifests.secret.data or {}).items()
    }
    documents: dict[str, dict[str, Any]] = {}
    for volume in manifests.spec.volumes or []:
        if volume.secret is None or volume.secret.secretName is None:
            continue
        name = volume.secret.secretName
        keys = [item.key for item in volume.secret.items] if volume.secret.items else list(data)
        documents[name] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {key: data[key] for key in keys},
        }
    return documents


def for_podman(manifests: PodManifests, *, host_network: bool = True) -> PodManifests:
    """The same Pod adapted to `podman kube play` 4.3.

    - `hostNetwork: true` unless disabled (then pods reach ferry at host.containers.internal);
    - namespace dropped (podman has none);
    - a Secret volume with `items` reads a podman secret of its own, `<secret>.<volume>`
      (`podman_secrets`), else every container would see every key;
    - `activeDeadlineSeconds` and `terminationGracePeriodSeconds` are ignored by podman: the
      runtime enforces the deadline itself and stops pods with its own grace period.
    """
    adapted = replace(manifests, pod=copy.deepcopy(manifests.pod))
    if adapted.pod.metadata is not None:
        adapted.pod.metadata.namespace = None
    for volume in adapted.spec.volumes or []:
        if volume.secret is not None and volume.secret.items:
            # Podman writes every volume of one secret into one podman volume named after it:
            # a volume that selects keys gets a secret (and so a podman volume) of its own.
            volume.secret.secretName = f"{volume.secret.secretName}.{volume.name}"
    adapted.spec.hostNetwork = True if host_network else None
    return adapted


# --- dry run ------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (the wrapper and sidecar scripts) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)

DRY_RUN_TOKEN = "dry-run-token"
DRY_RUN_ENDPOINT = RelayEndpoint("relay-host.invalid", 65535)


def redacted(manifests: PodManifests) -> PodManifests:
    """A copy with the Secret's values and the user's environment values redacted."""
    secret = copy.deepcopy(manifests.secret)
    secret.data = {
        key: f"{REDACTED} ({len(base64.b64decode(value))} bytes)"
        for key, value in (secret.data or {}).items()
    }
    shown = replace(manifests, secret=secret, pod=copy.deepcopy(manifests.pod))
    for container in shown.spec.containers:
        for item in container.env or []:
            if not item.name.startswith("FERRY_"):
                item.value = REDACTED
    return shown


def dry_run_documents(manifests: PodManifests) -> list[str]:
    """The Secret and the Pod as YAML documents."""
    return [
        yaml.dump(document.to_dict(), Dumper=_Dumper, sort_keys=False, width=100)
        for document in (manifests.secret, manifests.pod)
    ]


def render_dry_run(
    invocations: Iterable[ConnectorInvocation],
    *,
    runtime: str = "kubernetes",
    endpoint: RelayEndpoint | None = None,
    namespace: str = "default",
) -> str:
    """The Secret and Pod of each invocation as YAML documents, secret values redacted.

    The relay token and (unless given) endpoint are placeholders: ferry picks them when it runs.
    `runtime` "podman" shows the manifests as `podman kube play` receives them.
    """
    documents: list[str] = [
        "# ferry dry run: the manifests ferry would create (Secret values and environment values "
        "redacted;\n# the relay token and endpoint are placeholders chosen when ferry runs)\n"
    ]
    for invocation in invocations:
        settings = invocation.connector.options.kubernetes
        manifests = build_manifests(
            invocation,
            token=DRY_RUN_TOKEN,
            endpoint=endpoint or DRY_RUN_ENDPOINT,
            settings=settings,
            namespace=namespace,
        )
        if runtime == "podman":
            manifests = for_podman(manifests, host_network=settings.host_network is not False)
        documents += dry_run_documents(redacted(manifests))
    return "---\n".join(documents)
