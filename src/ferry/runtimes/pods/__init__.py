"""Pod runtimes: manifests, Podman (`kube play`), Kubernetes, their image registry and gc."""
