"""What a connection file may say about how connectors run: one msgspec schema (pure).

`ConnectorOptions` is a connector block's options (`env`, `relay`, `entrypoint`, `pull`,
`resources`, `network`, `volumes`, `kubernetes`) exactly as the file spells them, and
`PodLayout` is the connection-level `kubernetes:` block (the pod layout and pod-level settings).
Decoding a file into them checks everything that can be checked without a runtime: unknown keys,
types, names, labels, quantities, requests within limits. Problems raised here name the key
(`namespace: 'X' is not a valid namespace name`); `decode` and the connection file prefix the
path of the block they are in.

Which runtime honours which option is each runtime kind's own declaration (`OPTIONS` in
`ferry.runtimes.local`, `.docker`, `.pods`). Nothing here imports a container client: a local
sync loads this module and nothing of Kubernetes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from ferry.errors import ConfigError
from ferry.relay import check_relay_host
from ferry.runtimes.quantity import cpu_amount, memory_bytes

PULL_POLICIES = ("never", "if-not-present", "always")
# The options of a connector block every container runtime honours (each kind declares its own
# `OPTIONS`, see ferry.runtimes.resolve).
CONTAINER_OPTIONS = frozenset(
    {"env", "entrypoint", "pull", "resources.memory", "resources.cpu", "volumes", "relay"}
)
LAYOUTS = ("pod-per-connector", "single-pod")
DEFAULT_LAYOUT = "pod-per-connector"
ENV_FERRY_IMAGE = "FERRY_IMAGE"
# The image of a single pod's pump: python with ferry installed (scripts/build_images.py builds it).
DEFAULT_FERRY_IMAGE = "ferry-test/ferry:dev"
DEFAULT_TERMINATION_GRACE = 30
# A pod may wait this long for a node: a cluster autoscaler typically adds one in a few minutes.
DEFAULT_SCHEDULE_TIMEOUT = 600
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

Amount = str | int | float
# {requests|limits: {cpu|memory|ephemeral-storage: quantity}}; quantities are strings once read.
ResourceBlock = dict[str, dict[str, Amount]]


class _Block(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A strict block of a connection file: unknown keys are errors."""


def _set(block: _Block, name: str, value: object) -> None:
    """Store the normalised form of a field while the block is being checked."""
    msgspec.structs.force_setattr(block, name, value)


# --- quantities ---------------------------------------------------------------------------------


def memory_quantity(value: Amount, where: str = "memory") -> str:
    """A Kubernetes memory quantity (`512Mi`, `2Gi`, bytes) for a size ferry reads
    (`quantity.memory_bytes`: `512m` is 512 MiB here, never Kubernetes' 0.512 bytes)."""
    size = memory_bytes(str(value), where)
    for suffix, unit in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def cpu_quantity(value: Amount, where: str = "cpu") -> str:
    """A Kubernetes CPU quantity (`500m`, `2`) for `0.5`, `2`, `500m`."""
    millis = max(1, round(cpu_amount(value, where) * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


# The resources a requests/limits block may name, each with how its amounts are stated.
QUANTITIES: dict[str, Callable[[Amount, str], str]] = {
    "cpu": cpu_quantity,
    "memory": memory_quantity,
    "ephemeral-storage": memory_quantity,
}


def amount(resource: str, quantity: str, where: str) -> Decimal:
    """The number a quantity of `resource` stands for, to compare requests with limits."""
    if resource == "cpu":
        return cpu_amount(quantity, where)
    return Decimal(memory_bytes(quantity, where))


def check_requests_within_limits(resources: Mapping[str, Mapping[str, str]], where: str) -> None:
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for name, quantity in requests.items():
        limit = limits.get(name)
        if limit is not None and amount(name, quantity, where) > amount(name, limit, where):
            raise ConfigError(f"{where}: requests.{name} {quantity} is above limits.{name} {limit}")


def resource_block(
    value: Mapping[str, Mapping[str, Amount]], where: str
) -> dict[str, dict[str, str]]:
    """`{requests: {cpu, memory}, limits: {cpu, memory}}` with its quantities normalised."""
    block: dict[str, dict[str, str]] = {}
    for kind, amounts in value.items():
        if kind not in ("requests", "limits"):
            raise ConfigError(f"{where}: unknown key {kind!r} (expected requests, limits)")
        block[kind] = {}
        for resource, quantity in amounts.items():
            if resource not in QUANTITIES:
                raise ConfigError(
                    f"{where}.{kind}: unknown resource {resource!r} "
                    f"(expected {', '.join(QUANTITIES)})"
                )
            block[kind][resource] = QUANTITIES[resource](quantity, f"{where}.{kind}.{resource}")
    check_requests_within_limits(block, where)
    return block


# --- names and Kubernetes-typed objects ---------------------------------------------------------


def _check_name(value: str | None, pattern: re.Pattern[str], what: str, where: str) -> None:
    if value is not None and not pattern.match(value):
        raise ConfigError(f"{where}: {value!r} is not a valid {what} name")


def _check_text(value: str | None, where: str) -> None:
    if value is not None and not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string")


def _valid_key(key: str) -> bool:
    prefix, slash, rest = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(rest if slash else key))


def _check_keys(value: Mapping[str, str], where: str) -> None:
    """Label-like keys: an optional DNS-subdomain prefix and '/', then a name."""
    for key in value:
        if not _valid_key(key):
            raise ConfigError(f"{where}: invalid key {key!r}")


def _check_labels(labels: Mapping[str, str], where: str) -> None:
    _check_keys(labels, where)
    for key, text in labels.items():
        if key.startswith("ferry.") or key == MANAGED_BY_LABEL:
            raise ConfigError(f"{where}: label {key!r} is reserved for ferry")
        if not _LABEL_VALUE.match(text):
            raise ConfigError(f"{where}.{key}: {text!r} is not a valid label value")


def _kubernetes_object(value: Mapping[str, Any], model: str, where: str) -> dict[str, Any]:
    """Check a Kubernetes-typed mapping against lightkube's model; unknown keys are errors.

    lightkube loads its HTTP client with its models (~50 ms): it is imported here, only when a
    block sets one of these objects, so that files without them never load it.
    """
    from lightkube.models import core_v1

    kind = getattr(core_v1, model)
    try:
        parsed = kind.from_dict(dict(value))
    except (msgspec.ValidationError, TypeError, ValueError) as e:
        problem, _, at = str(e).partition(" - at `$")
        raise ConfigError(f"{where}{at.rstrip('`')}: not a valid {model}: {problem}") from None
    kept: dict[str, Any] = parsed.to_dict()
    dropped = _first_dropped(value, kept, where)
    if dropped is not None:
        raise ConfigError(f"{dropped}: not a field of {model} (Kubernetes field names)")
    return kept


def _first_dropped(given: object, kept: object, where: str) -> str | None:
    """The path of the first key of `given` that a model round trip dropped (an unknown key)."""
    pairs: list[tuple[str, object, object]] = []
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        for key, value in given.items():
            if key not in kept and value is not None:
                return f"{where}.{key}"
            pairs.append((f"{where}.{key}", value, kept.get(key)))
    elif isinstance(given, list) and isinstance(kept, list):
        pairs = [
            (f"{where}[{i}]", *items) for i, items in enumerate(zip(given, kept, strict=False))
        ]
    for path, value, kept_value in pairs:
        found = _first_dropped(value, kept_value, path)
        if found is not None:
            return found
    return None


# --- the blocks ---------------------------------------------------------------------------------


class Resources(_Block, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A connector block's `resources:` (a container runtime's limits)."""

    memory: Amount | None = None  # e.g. "512Mi" / "1g"
    cpu: Amount | None = None  # e.g. "0.5" / "500m"

    def __post_init__(self) -> None:
        _checked(self, _check_resources)


def _check_resources(block: Resources) -> None:
    if block.memory is not None:
        memory_bytes(str(block.memory), "memory")
    if block.cpu is not None:
        cpu_amount(block.cpu, "cpu")


class KubernetesSettings(_Block, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A connector's `kubernetes:` block (the pod runtimes': Podman and Kubernetes).

    Keys (all optional): namespace, relay_host, sidecar_image, labels, annotations,
    node_selector, tolerations, affinity, image_pull_secrets, service_account_name,
    automount_service_account_token, security_context (the pod's), container_security_context
    (every container's), resources (the connector's requests/limits), sidecar_resources,
    active_deadline_seconds, termination_grace_period_seconds, priority_class_name, host_network,
    schedule_timeout_seconds (how long a Kubernetes pod may stay unschedulable: room for a cluster
    autoscaler to add a node, not forever).
    """

    namespace: str | None = None
    relay_host: str | None = None
    sidecar_image: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] | None = None
    image_pull_secrets: tuple[str, ...] = ()
    service_account_name: str | None = None
    automount_service_account_token: bool = False
    security_context: dict[str, Any] | None = None
    container_security_context: dict[str, Any] | None = None
    resources: ResourceBlock = msgspec.field(default_factory=dict)
    sidecar_resources: ResourceBlock = msgspec.field(default_factory=dict)
    active_deadline_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None
    termination_grace_period_seconds: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_TERMINATION_GRACE
    priority_class_name: str | None = None
    host_network: bool | None = None
    schedule_timeout_seconds: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_SCHEDULE_TIMEOUT

    def __post_init__(self) -> None:
        _checked(self, _check_kubernetes)

    @classmethod
    def parse(cls, block: object, where: str = "kubernetes") -> KubernetesSettings:
        """Validate a `kubernetes:` block given as plain data; every problem is a ConfigError."""
        return decode(block, cls, where)

    def set_keys(self) -> list[str]:
        """The keys this block sets (differ from their defaults), in order."""
        return _set_fields(self, KubernetesSettings())


def _check_kubernetes(block: KubernetesSettings) -> None:
    _check_name(block.namespace, _DNS_LABEL, "namespace", "namespace")
    _check_name(
        block.service_account_name, _DNS_SUBDOMAIN, "service account", "service_account_name"
    )
    for key in ("sidecar_image", "priority_class_name", "relay_host"):
        _check_text(getattr(block, key), key)
    if block.relay_host is not None:
        check_relay_host(block.relay_host, "relay_host")
    for index, secret in enumerate(block.image_pull_secrets):
        _check_text(secret, f"image_pull_secrets[{index}]")
    _check_labels(block.labels, "labels")
    _check_keys(block.annotations, "annotations")
    _check_keys(block.node_selector, "node_selector")
    for key in ("resources", "sidecar_resources"):
        _set(block, key, resource_block(getattr(block, key), key))
    _check_objects(block)


# The Kubernetes-typed keys of the block, with lightkube's model of each.
_OBJECT_MODELS = {
    "affinity": "Affinity",
    "security_context": "PodSecurityContext",
    "container_security_context": "SecurityContext",
}


def _check_objects(block: KubernetesSettings) -> None:
    tolerations = tuple(
        _kubernetes_object(item, "Toleration", f"tolerations[{index}]")
        for index, item in enumerate(block.tolerations)
    )
    _set(block, "tolerations", tolerations)
    for key, model in _OBJECT_MODELS.items():
        value = getattr(block, key)
        if value is not None:
            _set(block, key, _kubernetes_object(value, model, key))


class PodLayout(KubernetesSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The connection-level `kubernetes:` block: the layout, for a single pod its pump's image and
    resources, and any pod-level key of a connector's block (namespace, labels, host_network ...).
    `settings` is the block as the pod builder reads it."""

    layout: str = DEFAULT_LAYOUT
    ferry_image: str | None = None
    pump_resources: ResourceBlock = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _checked(self, _check_layout)

    @property
    def single_pod(self) -> bool:
        return self.layout == "single-pod"

    @property
    def settings(self) -> KubernetesSettings:
        return self

    def image(self) -> str:
        return self.ferry_image or os.environ.get(ENV_FERRY_IMAGE) or DEFAULT_FERRY_IMAGE

    @classmethod
    def parse(cls, block: object, layout: str | None = None) -> PodLayout:
        """Validate the block; `layout` (from `--layout`) wins over the block's."""
        return decode(block, cls, "kubernetes").with_layout(layout)

    def with_layout(self, layout: str | None) -> PodLayout:
        """This block with `--layout`'s choice, when made (checked like the block's)."""
        if layout is None or layout == self.layout:
            return self
        if layout not in LAYOUTS:
            raise ConfigError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        return msgspec.structs.replace(self, layout=layout)


def _check_layout(block: PodLayout) -> None:
    if block.layout not in LAYOUTS:
        raise ConfigError(f"layout: {block.layout!r} is not one of {', '.join(LAYOUTS)}")
    _check_text(block.ferry_image, "ferry_image")
    _set(block, "pump_resources", resource_block(block.pump_resources, "pump_resources"))


class ConnectorOptions(_Block, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-connector options from a connection file's connector block (all optional)."""

    env: dict[str, str] = msgspec.field(default_factory=dict)
    relay: bool = False
    entrypoint: str | None = None  # "auto" derives it from image metadata; else a command line
    pull: str = "if-not-present"  # one of PULL_POLICIES
    resources: Resources = msgspec.field(default_factory=Resources)
    network: str | None = None
    volumes: dict[str, str] = msgspec.field(default_factory=dict)  # host dir -> container path
    kubernetes: KubernetesSettings = msgspec.field(default_factory=KubernetesSettings)

    def __post_init__(self) -> None:
        if self.pull not in PULL_POLICIES:
            policies = ", ".join(PULL_POLICIES)
            raise ValueError(f"pull: {self.pull!r} is not a pull policy (one of {policies})")
        # Host directories as absolute paths: relative ones are the current directory's.
        volumes = {str(Path(host).expanduser().resolve()): c for host, c in self.volumes.items()}
        _set(self, "volumes", volumes)

    @property
    def memory(self) -> str | None:
        return None if self.resources.memory is None else str(self.resources.memory)

    @property
    def cpu(self) -> str | None:
        return None if self.resources.cpu is None else str(self.resources.cpu)

    def set_options(self) -> list[str]:
        """The options this block sets (differ from their defaults), in order; `resources` by
        member (`resources.memory`)."""
        names = _set_fields(self, ConnectorOptions())
        if "resources" in names:
            at = names.index("resources")
            members = [f"resources.{name}" for name in _set_fields(self.resources, Resources())]
            names[at : at + 1] = members
        return names


def _set_fields(block: _Block, defaults: _Block) -> list[str]:
    names = block.__struct_fields__
    return [name for name in names if getattr(block, name) != getattr(defaults, name)]


# --- decoding -----------------------------------------------------------------------------------

_B = TypeVar("_B", bound=_Block)
# A problem a block's own check found starts with the key it is about: `labels.x: ...`.
_KEY_FIRST = re.compile(r"^[A-Za-z_][\w-]*(\[\d+\])*(\.[\w-]+(\[\d+\])*)*: ")


def _checked(block: _B, check: Callable[[_B], None]) -> None:
    """Run a block's own check while msgspec decodes it: msgspec reports a ValueError raised
    here with the path of the block, which `describe` joins to the key named in the message."""
    try:
        check(block)
    except ConfigError as e:
        raise ValueError(e.message) from None


def describe(error: msgspec.ValidationError) -> str:
    """A decoding error in a connection file's words, led by the path of the key at fault:
    `source.kubernetes.namespace: 'X' is not a valid namespace name`, `source: unknown key `x``,
    `source.pull: Invalid enum value 'sometimes'`."""
    message, at, path = str(error).rpartition(" - at `$")
    message, path = (message, path.rstrip("`").lstrip(".")) if at else (path, "")
    if _KEY_FIRST.match(message):
        return f"{path}.{message}" if path else message
    message = message.replace("Object contains unknown field", "unknown key").replace(
        "Object missing required field", "missing required key"
    )
    message = message.replace(" | null`", "`")  # null is as good as not set
    for plain, words in (
        ("`bool`", "true or false"),
        ("`int`", "an integer"),
        ("`str`", "a string"),
    ):
        message = message.replace(f"Expected {plain}", f"expected {words}")
    return f"{path}: {message}" if path else message


def unset_nulls(block: object) -> object:
    """A block without its keys set to null: such a key keeps its default."""
    if not isinstance(block, Mapping):
        return {} if block is None else block
    return {key: value for key, value in block.items() if value is not None}


def decode(data: object, kind: type[_B], where: str) -> _B:
    """`data` (plain data, as read from YAML) as a `kind` block; ConfigError naming `where`.
    A key set to null keeps its default."""
    data = unset_nulls(data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as e:
        found = describe(e)
        joined = f"{where}.{found}" if _KEY_FIRST.match(found) else f"{where}: {found}"
        raise ConfigError(joined) from None
