"""What the single-pod layout runs, as plain data: the pair of invocations and what a
connector's own `kubernetes:` block may set in it (pure; no pod machinery is loaded with it).

The layout's settings (`kubernetes: {layout: single-pod, ...}` at the connection level) are
`ferry.runtimes.options.PodLayout`; the pod itself is built by `single_pod.build_single_pod`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.errors import ConfigError
from ferry.runtimes.base import ConnectorInvocation, RunLabels
from ferry.runtimes.options import KubernetesSettings, PodLayout

# Keys of a connector's own `kubernetes:` block that apply to its container in a single pod.
CONTAINER_KEYS = ("resources", "container_security_context")


@dataclass(frozen=True)
class PodPair:
    """A sync's source read and destination write, to run together in one pod."""

    source: ConnectorInvocation
    destination: ConnectorInvocation
    layout: PodLayout
    labels: RunLabels

    def invocations(self) -> tuple[ConnectorInvocation, ConnectorInvocation]:
        return self.source, self.destination


def container_settings(invocation: ConnectorInvocation) -> KubernetesSettings:
    """A connector's own `kubernetes:` block, which may only set what its container takes."""
    settings = invocation.connector.options.kubernetes
    misplaced = [key for key in settings.set_keys() if key not in CONTAINER_KEYS]
    if misplaced:
        raise ConfigError(
            f"{invocation.labels.role}.kubernetes: {', '.join(misplaced)} apply to the whole pod "
            "in the single-pod layout: set them in the connection's kubernetes: block (a "
            f"connector's block may set only {', '.join(CONTAINER_KEYS)})"
        )
    return settings
