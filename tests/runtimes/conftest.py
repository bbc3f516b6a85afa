"""Fixtures for runtime tests: tiny busybox images made on the spot, and the built test images.

The tiny images hold only busybox-static and `/connector.sh`, which runs the shell snippet in
`$TINY` (with the protocol arguments as `$@`) or, without it, prints a greeting with its
arguments. Importing one takes about a second and needs no registry, so runtime tests do not
wait for `scripts/build_images.py`; tests of the real connector images use `built_image`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
from kmock_cluster import FakeCluster, kubeconfig
from podkit import (
    DUCKDB,
    FAKER,
    FERRY,
    GENERATOR,
    NO_ENTRYPOINT,
    NULL,
    SIDECAR,
    podman,
    pods_of,
)

TINY_CONNECTOR = b"""#!/bin/sh
# ferry's tiny test connector: runs the snippet in $TINY, else greets with its arguments.
if [ -n "$TINY" ]; then
    eval "$TINY"
    exit $?
fi
echo "tiny connector: $*"
"""

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:2345:\n"

TINY = "ferry-test/runtime-tiny:dev"  # ENTRYPOINT /connector.sh, runs as root
TINY_APP = "ferry-test/runtime-tiny-app:dev"  # USER app (named, uid 1234 gid 2345 via /etc/passwd)
TINY_UID = "ferry-test/runtime-tiny-uid:dev"  # USER 4321:4322 (numeric, in no passwd file)
TINY_NO_ENTRYPOINT = "ferry-test/runtime-tiny-noentry:dev"  # no ENTRYPOINT, no CMD
TINY_AIRBYTE = "ferry-test/runtime-tiny-airbyte:dev"  # no ENTRYPOINT; AIRBYTE_ENTRYPOINT set


def engine_missing(reason: str) -> None:
    """Skip, or fail when engines are required (as tests/conftest.py does)."""
    if os.environ.get("FERRY_REQUIRE_ENGINES") == "1":
        pytest.fail(f"engine required but unavailable: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class TinyImages:
    root: str = TINY
    app_user: str = TINY_APP
    numeric_user: str = TINY_UID
    no_entrypoint: str = TINY_NO_ENTRYPOINT
    airbyte_entrypoint: str = TINY_AIRBYTE


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file():
            return path
    found = shutil.which("busybox")
    if found is None:
        engine_missing("busybox-static is not installed (apt-get install busybox-static)")
    return Path(str(found))


def _rootfs_tar() -> bytes:
    busybox = _busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        for directory in ("bin", "etc", "tmp", "home", "home/app", "root", "proc", "sys", "dev"):
            add_dir(directory, 0o1777 if directory == "tmp" else 0o755)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        add_file("etc/passwd", PASSWD)
        add_file("etc/group", GROUP)
        add_file("connector.sh", TINY_CONNECTOR, 0o755)
    return buffer.getvalue()


def _docker_client() -> Any:
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def tiny_images(docker_available: bool) -> TinyImages:
    """Import the tiny images (always afresh: a second each, and never stale)."""
    if not docker_available:
        engine_missing("no running Docker engine (`docker info` failed); run scripts/engines.sh")
    client = _docker_client()
    try:
        rootfs = _rootfs_tar()
        env = "ENV PATH=/bin"
        entry = 'ENTRYPOINT ["/connector.sh"]'
        variants = {
            TINY: [env, entry],
            TINY_APP: [env, entry, "USER app"],
            TINY_UID: [env, entry, "USER 4321:4322"],
            TINY_NO_ENTRYPOINT: [env],
            TINY_AIRBYTE: [env, "ENV AIRBYTE_ENTRYPOINT=/connector.sh"],
        }
        for name, changes in variants.items():
            repository, tag = name.rsplit(":", 1)
            client.api.import_image_from_data(
                rootfs, repository=repository, tag=tag, changes=changes
            )
    finally:
        client.close()
    return TinyImages()


BUILD_HINT = "python3 scripts/build_images.py"


@pytest.fixture(scope="session")
def built_image(docker_available: bool) -> Callable[[str], str]:
    """`built_image("source-faker")` → `ferry-test/source-faker:dev`, failing clearly if absent."""
    if not docker_available:
        engine_missing("no running Docker engine (`docker info` failed); run scripts/engines.sh")

    def get(name: str) -> str:
        import docker.errors

        image = f"ferry-test/{name}:dev"
        client = _docker_client()
        try:
            client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"test image {image} is missing: build it with `{BUILD_HINT}`")
        finally:
            client.close()
        return image

    return get


@pytest.fixture
def podman_images(podman_engine: None) -> None:
    missing = [
        image
        for image in (FAKER, DUCKDB, GENERATOR, NULL, NO_ENTRYPOINT, SIDECAR, FERRY)
        if podman("image", "exists", image, check=False).returncode != 0
    ]
    if missing:
        pytest.fail(
            f"podman lacks test images {', '.join(missing)}: build them with `{BUILD_HINT} --engine podman`"
        )


@pytest.fixture
def connection_name() -> Iterator[str]:
    name = f"pm-{uuid.uuid4().hex[:8]}"
    yield name
    for pod in pods_of(name):  # a failed test must not leave pods behind
        podman("pod", "rm", "-f", "-t", "0", pod["Name"], check=False)
        podman("secret", "rm", pod["Name"], check=False)
        podman("volume", "rm", "-f", pod["Name"], check=False)


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeCluster]:
    async with FakeCluster() as kube, kmock.Server(kube) as server:
        kube.resources["v1/pods"] = kmock.ResourceInfo()
        kube.resources["v1/secrets"] = kmock.ResourceInfo()
        config = kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("FERRY_RELAY_HOST", "127.0.0.1")
        monkeypatch.delenv("FERRY_POD_IP", raising=False)
        yield kube
