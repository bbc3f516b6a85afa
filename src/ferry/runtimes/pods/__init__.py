"""Pod runtimes: manifests, Podman (`kube play`), Kubernetes, their image registry and gc."""

# The connector-block options pods honour (see ferry.runtimes.check_options_apply). Pods always
# relay, so `relay: true` is simply true of them; their network is `kubernetes: {host_network}`.
OPTIONS = frozenset(
    {"env", "entrypoint", "pull", "memory", "cpu", "volumes", "relay", "kubernetes"}
)
