"""Pod runtimes: manifests, Podman (`kube play`), Kubernetes, their image registry and gc."""

from ferry.runtimes.options import CONTAINER_OPTIONS

# The connector-block options pods honour (see ferry.runtimes.resolve). Pods always
# relay, so `relay: true` is simply true of them; their network is `kubernetes: {host_network}`.
OPTIONS = CONTAINER_OPTIONS | {"kubernetes"}
