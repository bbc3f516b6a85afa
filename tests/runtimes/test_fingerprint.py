"""Runtime fingerprints: they change whenever the code a connector runs changes (so a cached
spec is never stale) and are None where the runtime cannot know that code."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.runtimes.base import ConnectorOptions, ConnectorRef
from ferry.runtimes.docker.runtime import DockerRuntime
from ferry.runtimes.local.install import MANIFEST
from ferry.runtimes.local.process import LocalRuntime
from ferry.runtimes.options import decode
from ferry.runtimes.pods.kubernetes import KubernetesRuntime
from ferry.runtimes.pods.podman import PodmanRuntime

DIGEST = "sha256:" + "0123456789abcdef" * 4


def parsed(fingerprint: str | None) -> dict[str, Any]:
    assert fingerprint is not None
    return dict(json.loads(fingerprint))


def local_fingerprint(target: Path) -> str | None:
    return asyncio.run(LocalRuntime().fingerprint(ConnectorRef("local", str(target))))


def touch(path: Path) -> None:
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def test_local_fingerprint_follows_the_executable(tmp_path: Path) -> None:
    script = tmp_path / "connector.sh"
    script.write_text("#!/bin/sh\necho one\n")
    script.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(script)
    first = parsed(local_fingerprint(link))
    assert first["executable"] == str(script)  # the real path
    assert parsed(local_fingerprint(link)) == first
    touch(script)
    touched = parsed(local_fingerprint(link))
    assert touched["mtime_ns"] != first["mtime_ns"]
    script.write_text("#!/bin/sh\necho two, longer\n")
    assert parsed(local_fingerprint(link))["size"] != touched["size"]
    assert local_fingerprint(tmp_path / "missing") is None


def test_local_fingerprint_of_an_installed_connector_has_its_version(tmp_path: Path) -> None:
    venv = tmp_path / "source-x"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "source-x"
    script.write_text("#!/bin/sh\n")
    manifest = {"name": "source-x", "package": "airbyte-source-x", "executable": "bin/source-x"}
    (venv / MANIFEST).write_text(json.dumps({**manifest, "version": "1.0.0"}))
    assert parsed(local_fingerprint(script))["package"] == "airbyte-source-x==1.0.0"
    (venv / MANIFEST).write_text(json.dumps({**manifest, "version": "1.0.1"}))
    assert parsed(local_fingerprint(script))["package"] == "airbyte-source-x==1.0.1"


def test_local_fingerprint_of_a_first_party_connector_covers_its_sources() -> None:
    # Its console script stays the same when ferry_connectors changes (editable installs).
    script = Path(sys.executable).parent / "source-generator"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e . into this venv)")
    sources = parsed(local_fingerprint(script))["first_party_sources"]
    assert "source_generator.py" in [name for name, _, _ in sources]


def test_kubernetes_fingerprint_only_for_an_image_pinned_by_digest() -> None:
    runtime = KubernetesRuntime()

    def fingerprint(image: str, **options: Any) -> str | None:
        ref = ConnectorRef("kubernetes", image, options=decode(options, ConnectorOptions, "source"))
        return asyncio.run(runtime.fingerprint(ref))

    assert fingerprint("airbyte/source-faker:6.2.20") is None
    assert fingerprint("airbyte/source-faker") is None
    assert fingerprint("airbyte/source-faker@sha256:abc") is None
    pinned = fingerprint(f"airbyte/source-faker@{DIGEST}")
    assert parsed(pinned)["image"] == f"airbyte/source-faker@{DIGEST}"
    assert fingerprint(f"airbyte/source-faker:6.2.20@{DIGEST}") is not None
    assert fingerprint(f"airbyte/source-faker@{DIGEST}", entrypoint="python /main.py") != pinned


def image_tar(marker: str) -> bytes:
    """A one-file root filesystem: enough for an image id, never run."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker.encode()))
    return buffer.getvalue()


@pytest.fixture
def docker_client(docker_engine: None) -> Iterator[Any]:
    import docker

    client = docker.from_env()
    yield client
    client.close()


def docker_import(client: Any, name: str, marker: str) -> str:
    repository, tag = name.rsplit(":", 1)
    client.api.import_image_from_data(image_tar(marker), repository=repository, tag=tag)
    return str(client.api.inspect_image(name)["Id"])


def test_docker_fingerprint_is_the_image_id_and_the_options(docker_client: Any) -> None:
    name = f"ferry-test/fingerprint-{uuid.uuid4().hex[:8]}:dev"
    first_id = docker_import(docker_client, name, "first build")
    try:

        async def fingerprints(**options: Any) -> list[str | None]:
            runtime = DockerRuntime()
            try:
                variants = [ConnectorOptions(), decode(options, ConnectorOptions, "source")]
                return [
                    await runtime.fingerprint(ConnectorRef("docker", name, options=o))
                    for o in variants
                ]
            finally:
                await runtime.close()

        plain, relayed = asyncio.run(fingerprints(relay=True))
        assert parsed(plain)["image_id"] == first_id
        assert parsed(relayed)["relay"] is True
        _, overridden = asyncio.run(fingerprints(entrypoint="/connector.sh"))
        assert parsed(overridden)["entrypoint"] == "/connector.sh"
        second_id = docker_import(docker_client, name, "second build")  # a rebuild, same tag
        rebuilt, _ = asyncio.run(fingerprints())
        assert parsed(rebuilt)["image_id"] == second_id != first_id
    finally:
        for image in (name, first_id):
            docker_client.api.remove_image(image, force=True)


def podman(*args: str, data: bytes | None = None) -> str:
    return subprocess.run(
        ["podman", *args], input=data, capture_output=True, timeout=120, check=True
    ).stdout.decode()


def test_podman_fingerprint_is_the_image_id(podman_engine: None) -> None:
    name = f"localhost/ferry-test/fingerprint-{uuid.uuid4().hex[:8]}:dev"
    runtime = PodmanRuntime()
    ref = ConnectorRef("podman", name)
    first_id = podman("import", "-", name, data=image_tar("first build")).strip()
    try:
        first = asyncio.run(runtime.fingerprint(ref))
        assert parsed(first)["image_id"] == first_id.removeprefix("sha256:")
        second_id = podman("import", "-", name, data=image_tar("second build")).strip()
        second = asyncio.run(runtime.fingerprint(ref))
        assert parsed(second)["image_id"] == second_id.removeprefix("sha256:")
        assert second_id != first_id
    finally:
        podman("rmi", "--force", name, first_id)
