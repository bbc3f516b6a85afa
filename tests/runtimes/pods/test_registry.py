"""Reading an image's config from its registry (`entrypoint: auto` on Kubernetes).

Against Debian's real `docker-registry` (distribution 2.8) on loopback: images are pushed to it
with `docker tag` + `docker push` (after `docker login`, into a throwaway DOCKER_CONFIG), then
read back. Basic auth is the registry's htpasswd; bearer auth is a second registry process on
the same storage with `auth: token`, whose token service is a small HTTP server in this module
issuing RS256 JWTs (signed with `openssl`) for a self-signed certificate the registry trusts.
The Kubernetes side uses the kmock fake API (see kmock_cluster.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
from kmock_cluster import FakeCluster, Kubelet, Outcome, kubeconfig

from ferry.engine import commands
from ferry.errors import ConfigError, ImageUnavailable
from ferry.relay import derive_entrypoint, encode_entrypoint
from ferry.runtimes.base import ConnectorOptions, ConnectorRef
from ferry.runtimes.pods.kubernetes import KubernetesRuntime
from ferry.runtimes.pods.registry import (
    Credentials,
    ImageReference,
    credentials_from_docker_config,
    docker_configs_from_pull_secrets,
    fetch_image_config,
    is_insecure,
    parse_challenge,
    parse_reference,
    pick_manifest,
)

REGISTRY_BINARY = "/usr/bin/docker-registry"
USER, PASSWORD = "ferry", "s3cret-" + uuid.uuid4().hex[:6]
NO_ENTRYPOINT = "ferry-test/no-entrypoint:dev"
BONJOUR = "ferry-test/bonjour:dev"
FAKER_ENTRYPOINT = "/opt/connector/bin/source-faker"


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ubuntu", ImageReference("docker.io", "library/ubuntu", "latest")),
        (
            "airbyte/source-faker:6.2.20",
            ImageReference("docker.io", "airbyte/source-faker", "6.2.20"),
        ),
        ("ghcr.io/org/img@sha256:ab", ImageReference("ghcr.io", "org/img", "sha256:ab")),
        ("127.0.0.1:5000/a/b:dev", ImageReference("127.0.0.1:5000", "a/b", "dev")),
        ("localhost/x", ImageReference("localhost", "x", "latest")),
        ("index.docker.io/library/busybox:1", ImageReference("docker.io", "library/busybox", "1")),
    ],
)
def test_parse_reference(image: str, expected: ImageReference) -> None:
    assert parse_reference(image) == expected


def test_parse_reference_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        parse_reference("Not Valid")


def test_credentials_from_docker_config_documents() -> None:
    auth = base64.b64encode(b"alice:pw:with:colons").decode()
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": auth},
            "r.example:5000": {"username": "bob", "password": "x"},
        }
    }
    assert credentials_from_docker_config(config, "docker.io") == Credentials(
        "alice", "pw:with:colons"
    )
    assert credentials_from_docker_config(config, "r.example:5000") == Credentials("bob", "x")
    assert credentials_from_docker_config(config, "other.example") is None
    dockercfg = {"https://q.example": {"auth": base64.b64encode(b"c:d").decode()}}  # legacy format
    assert credentials_from_docker_config(dockercfg, "q.example") == Credentials("c", "d")
    assert "pw" not in repr(Credentials("alice", "pw"))


def test_pull_secret_documents() -> None:
    document = {"auths": {"r.example": {"auth": base64.b64encode(b"u:p").decode()}}}
    secret = {
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(document).encode()).decode()},
    }
    assert docker_configs_from_pull_secrets([secret, {"data": {"other": "x"}}]) == [document]


def test_challenges_platforms_and_insecure_registries() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"'
    )
    assert scheme == "bearer"
    assert params["realm"] == "https://auth.docker.io/token"
    assert params["scope"] == "repository:library/ubuntu:pull"
    index = {
        "manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
        ]
    }
    assert pick_manifest(index, "arm64") == "sha256:arm"
    assert pick_manifest(index, "s390x") == "sha256:amd"
    assert is_insecure("127.0.0.1:5000", {})
    assert is_insecure("localhost:5000", {})
    assert not is_insecure("registry.example", {})
    assert is_insecure(
        "registry.example:5000", {"FERRY_INSECURE_REGISTRIES": "registry.example:5000"}
    )


def test_derive_entrypoint_follows_docker_run() -> None:
    """Protocol arguments replace CMD when there is an ENTRYPOINT, as `docker run IMAGE spec` does."""
    assert derive_entrypoint({"Env": ["AIRBYTE_ENTRYPOINT=/app/run"], "Entrypoint": ["x"]}) is None
    assert derive_entrypoint({"Entrypoint": ["/bin/app", "--flag"], "Cmd": ["--help"]}) == (
        "/bin/app --flag"
    )
    assert derive_entrypoint({"Cmd": ["python", "a b.py"]}) == "python 'a b.py'"
    shell_form = {"Entrypoint": ["/bin/sh", "-c", 'echo "$0"']}
    assert derive_entrypoint(shell_form) == "/bin/sh -c 'echo \"$0\"'"
    assert derive_entrypoint({}) is None


# --- a real registry ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the registry exited: {log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError as error:
            error.close()
            return  # 401: it answers
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the registry at {url} did not come up")


def start_registry(
    root: Path, name: str, auth: dict[str, Any], storage: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(storage)}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": auth,
    }
    path = root / f"{name}.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    log = root / f"{name}.log"
    with log.open("wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(path)], stdout=output, stderr=subprocess.STDOUT
        )
    wait_for(f"http://127.0.0.1:{port}/v2/", process, log)
    return f"127.0.0.1:{port}", process


@dataclass
class Registry:
    host: str
    docker_config: Path
    root: Path
    storage: Path

    def image(self, name: str) -> str:
        return f"{self.host}/{name}"


def docker(*args: str, env: dict[str, str], input: str | None = None) -> str:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, docker_available: bool
) -> Iterator[Registry]:
    if not os.access(REGISTRY_BINARY, os.X_OK) or shutil.which("htpasswd") is None:
        if os.environ.get("FERRY_REQUIRE_ENGINES") == "1":
            pytest.fail(
                "docker-registry and htpasswd are required (apt-get install docker-registry apache2-utils)"
            )
        pytest.skip("docker-registry or htpasswd is not installed")
    if not docker_available:
        if os.environ.get("FERRY_REQUIRE_ENGINES") == "1":
            pytest.fail("a Docker engine is required to push test images")
        pytest.skip("no running Docker engine (`docker info` failed); run scripts/engines.sh")
    root = tmp_path_factory.mktemp("registry")
    storage = root / "storage"
    htpasswd = root / "htpasswd"
    htpasswd.write_text(
        subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
        ).stdout
    )
    auth = {"htpasswd": {"realm": "ferry-test", "path": str(htpasswd)}}
    host, process = start_registry(root, "basic", auth, storage)
    env = {**os.environ, "DOCKER_CONFIG": str(root / "docker")}
    pushed = []
    try:
        docker("login", host, "-u", USER, "--password-stdin", env=env, input=PASSWORD)
        for image in (NO_ENTRYPOINT, BONJOUR):
            docker("image", "inspect", image, env=env)  # built by scripts/build_images.py
            docker("tag", image, f"{host}/{image}", env=env)
            pushed.append(f"{host}/{image}")
            docker("push", "-q", f"{host}/{image}", env=env)
        yield Registry(host, root / "docker", root, storage)
    finally:
        process.terminate()
        process.wait()
        for tag in pushed:
            subprocess.run(["docker", "rmi", tag], capture_output=True, check=False, env=env)


@pytest.fixture
def local_docker_config(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("DOCKER_CONFIG", str(registry.docker_config))
    return registry


def test_config_with_basic_auth_from_the_local_docker_config(local_docker_config: Registry) -> None:
    config = asyncio.run(fetch_image_config(local_docker_config.image(NO_ENTRYPOINT)))
    assert config["Entrypoint"] == [FAKER_ENTRYPOINT]
    assert not any(item.startswith("AIRBYTE_ENTRYPOINT=") for item in config["Env"])
    assert derive_entrypoint(config) == FAKER_ENTRYPOINT


def test_credentials_from_an_image_pull_secret(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no local credentials
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    document = {"auths": {registry.host: {"auth": auth}}}
    config = asyncio.run(
        fetch_image_config(registry.image(NO_ENTRYPOINT), docker_configs=[document])
    )
    assert config["Entrypoint"] == [FAKER_ENTRYPOINT]
    # Without credentials, or with wrong ones, the error says what to do.
    with pytest.raises(ImageUnavailable, match="docker login"):
        asyncio.run(fetch_image_config(registry.image(NO_ENTRYPOINT)))
    wrong = {"auths": {registry.host: {"username": USER, "password": "wrong"}}}
    with pytest.raises(ImageUnavailable, match="401"):
        asyncio.run(fetch_image_config(registry.image(NO_ENTRYPOINT), docker_configs=[wrong]))


def test_unknown_tag_is_image_unavailable(local_docker_config: Registry) -> None:
    with pytest.raises(ImageUnavailable, match="not found"):
        asyncio.run(fetch_image_config(local_docker_config.image("ferry-test/no-entrypoint:nope")))


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=body,
        method=method,
        headers={"Authorization": f"Basic {token}", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), dict(response.headers)


def test_index_resolves_to_the_platforms_manifest(local_docker_config: Registry) -> None:
    """An OCI index (multi-arch image) pointing at the two pushed images as amd64 and arm64."""
    host = local_docker_config.host
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    entries = []
    for image, arch in ((NO_ENTRYPOINT, "amd64"), (BONJOUR, "arm64")):
        repo, tag = image.rsplit(":", 1)
        body, headers = _request("GET", f"http://{host}/v2/{repo}/manifests/{tag}", headers=accept)
        entries.append(
            {
                "mediaType": headers["Content-Type"],
                "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    # An index may only reference manifests of its own repository: copy bonjour's over by digest.
    bonjour_manifest, _ = _request(
        "GET", f"http://{host}/v2/ferry-test/bonjour/manifests/dev", headers=accept
    )
    for layer in [json.loads(bonjour_manifest)["config"], *json.loads(bonjour_manifest)["layers"]]:
        digest = layer["digest"]
        _request(
            "POST",
            f"http://{host}/v2/ferry-test/no-entrypoint/blobs/uploads/?mount={digest}&from=ferry-test/bonjour",
        )
    _request(
        "PUT",
        f"http://{host}/v2/ferry-test/no-entrypoint/manifests/{entries[1]['digest']}",
        bonjour_manifest,
        {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    _request(
        "PUT",
        f"http://{host}/v2/ferry-test/no-entrypoint/manifests/multi",
        json.dumps(index).encode(),
        {"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    image = local_docker_config.image("ferry-test/no-entrypoint:multi")
    amd64 = asyncio.run(fetch_image_config(image, architecture="amd64"))
    assert amd64["Entrypoint"] == [FAKER_ENTRYPOINT]
    arm64 = asyncio.run(fetch_image_config(image, architecture="arm64"))
    assert arm64["Entrypoint"] != amd64["Entrypoint"]  # bonjour's shell-form ENTRYPOINT
    assert arm64["Entrypoint"][:2] == ["/bin/sh", "-c"]


# --- bearer tokens ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues registry tokens (RS256 JWT with an x5c header) to clients with the right password."""

    def __init__(self, root: Path, service: str, issuer: str) -> None:
        self.key = root / "token.key"
        self.cert = root / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "1",
                "-subj",
                "/CN=ferry-test-token",
            ],
            capture_output=True,
            check=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.service, self.issuer = service, issuer
        self.requests: list[dict[str, Any]] = []
        service_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                header = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                service_self.requests.append({"query": query, "authorized": header == expected})
                if header != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service_self.token(query.get("scope", ""))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scope: str) -> str:
        _, name, actions = scope.split(":") if scope.count(":") == 2 else ("", "", "")
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": self.issuer,
            "sub": USER,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": name, "actions": actions.split(",")}],
        }
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
        ).stdout
        return f"{signing_input}.{b64url(signature)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_auth(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(registry.docker_config))
    root = registry.root / f"bearer-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    tokens = TokenService(root, service="ferry-test-registry", issuer="ferry-test-issuer")
    auth = {
        "token": {
            "realm": tokens.url,
            "service": tokens.service,
            "issuer": tokens.issuer,
            "rootcertbundle": str(tokens.cert),
        }
    }
    host, process = start_registry(root, "bearer", auth, registry.storage)
    try:
        auth_entry = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        document = {"auths": {host: {"auth": auth_entry}}}
        config = asyncio.run(
            fetch_image_config(f"{host}/{NO_ENTRYPOINT}", docker_configs=[document])
        )
        assert config["Entrypoint"] == [FAKER_ENTRYPOINT]
        assert tokens.requests[-1] == {
            "query": {
                "service": "ferry-test-registry",
                "scope": "repository:ferry-test/no-entrypoint:pull",
            },
            "authorized": True,
        }
        wrong = {"auths": {host: {"username": USER, "password": "nope"}}}
        with pytest.raises(ImageUnavailable, match="refused the credentials"):
            asyncio.run(
                fetch_image_config(
                    f"{host}/{NO_ENTRYPOINT}", docker_configs=[wrong], use_local_config=False
                )
            )
    finally:
        process.terminate()
        process.wait()
        tokens.close()


# --- the Kubernetes runtime uses it --------------------------------------------------------------


def test_kubernetes_entrypoint_auto_reads_the_registry_with_the_pull_secret(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod of an image without AIRBYTE_ENTRYPOINT gets its ENTRYPOINT as the override.

    The API server is the kmock fake; the registry is real; the credentials come from the
    imagePullSecret the connector block names (there are none locally).
    """
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.setenv("FERRY_RELAY_HOST", "127.0.0.1")
    image = registry.image(NO_ENTRYPOINT)

    async def run() -> dict[str, Any]:
        async with FakeCluster() as kube, kmock.Server(kube) as server:
            kube.resources["v1/pods"] = kmock.ResourceInfo()
            kube.resources["v1/secrets"] = kmock.ResourceInfo()
            monkeypatch.setenv(
                "KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/")))
            )
            auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            dockerconfig = json.dumps({"auths": {registry.host: {"auth": auth}}}).encode()
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "regcred", "namespace": "ferry-test"},
                "data": {".dockerconfigjson": base64.b64encode(dockerconfig).decode()},
            }
            async with kube.post("/api/v1/namespaces/ferry-test/secrets", json=secret) as response:
                assert response.status < 300
            spec = {"type": "SPEC", "spec": {"connectionSpecification": {}}}
            kubelet = Kubelet(
                kube, lambda pod, files: Outcome(stdout=json.dumps(spec).encode() + b"\n")
            )
            ref = ConnectorRef(
                "kubernetes",
                image,
                options=ConnectorOptions(
                    entrypoint="auto", kubernetes={"image_pull_secrets": ["regcred"]}
                ),
            )
            runtime = KubernetesRuntime()
            await commands.fetch_spec(ref, runtime)
            await runtime.close()
            await asyncio.gather(*(r.done.wait() for r in kubelet.pods))
            return kubelet.pods[0].pod

    pod = asyncio.run(run())
    connector = next(c for c in pod["spec"]["containers"] if c["name"] == "connector")
    env = {e["name"]: e["value"] for e in connector["env"]}
    assert env["FERRY_ENTRYPOINT_OVERRIDE"] == encode_entrypoint(FAKER_ENTRYPOINT)
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
