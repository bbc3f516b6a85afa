"""An image's config (Entrypoint, Cmd, Env) read from its registry, for `entrypoint: auto`.

Kubernetes does not expose image metadata, so with `entrypoint: auto` and no AIRBYTE_ENTRYPOINT
known, ferry asks the image's registry (the distribution v2 API, Docker Hub and OCI registries
alike):

1. `GET /v2/<repository>/manifests/<tag|digest>` accepting OCI and Docker manifests and indexes;
   an index (multi-arch manifest list) is resolved to the entry of ferry's platform
   (linux/<this machine's architecture>, else linux/amd64);
2. the manifest's `config.digest` -> `GET /v2/<repository>/blobs/<digest>`, verified against the
   digest; its `config` object holds Entrypoint, Cmd, Env, User.

Authentication follows the registry's `WWW-Authenticate` challenge: `Basic` (e.g. htpasswd) sends
the credentials, `Bearer` fetches a token from the realm (with the credentials when there are
some, anonymously otherwise). Credentials come from docker config documents: the pod's
imagePullSecrets (`.dockerconfigjson` / `.dockercfg`) on Kubernetes, and the local docker config
(`$DOCKER_CONFIG/config.json`, else ~/.docker/config.json), including `credsStore`/`credHelpers`
through the `docker-credential-<helper>` programs. Blob redirects (to a CDN or object store) are
followed without the Authorization header.

Registries on loopback addresses are spoken to over plain HTTP (as Docker does); others over
HTTPS unless listed in FERRY_INSECURE_REGISTRIES (comma-separated `host[:port]`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from ferry.errors import ConfigError, ImageUnavailable, RuntimeUnavailable

logger = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
ENV_INSECURE = "FERRY_INSECURE_REGISTRIES"

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[:2])
MAX_DOCUMENT = 4 << 20  # manifests and configs are small; refuse anything huge
TIMEOUT = 30.0

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


# --- references and credentials (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class ImageReference:
    """`registry/repository:tag` or `@digest`, normalised like Docker does."""

    registry: str  # host[:port]; docker.io for Docker Hub
    repository: str  # library/ubuntu
    reference: str  # a tag or a digest

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_reference(image: str) -> ImageReference:
    """Docker's normalisation: `ubuntu` is docker.io/library/ubuntu:latest."""
    text = image.strip()
    if not text or " " in text:
        raise ConfigError(f"invalid image reference {image!r}")
    name, digest = text, ""
    if "@" in text:
        name, digest = text.split("@", 1)
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+|__)*", repository):
        raise ConfigError(f"invalid repository name in image reference {image!r}")
    return ImageReference(registry, repository, digest or tag or "latest")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # a refresh token (docker config's identitytoken)
    registry_token: str = ""  # a bearer token to use as is

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, ...)"


def _auth_keys(registry: str) -> list[str]:
    if registry == DOCKER_HUB:
        return list(DOCKER_HUB_AUTH_KEYS)
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"]


def _normalise_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key.strip()).split("/", 1)[0]
    return DOCKER_HUB if key in ("index.docker.io", "registry-1.docker.io") else key


def credentials_from_docker_config(config: Mapping[str, Any], registry: str) -> Credentials | None:
    """The credentials a docker config document (config.json, `.dockerconfigjson`, or the older
    `.dockercfg` map) holds for `registry`, if any (helpers are not consulted here)."""
    auths = config.get("auths") if isinstance(config.get("auths"), Mapping) else config
    if not isinstance(auths, Mapping):
        return None
    wanted = _normalise_key(registry)
    entries = [entry for key, entry in auths.items() if _normalise_key(str(key)) == wanted]
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        auth = entry.get("auth")
        if auth and not username:
            try:
                decoded = base64.b64decode(str(auth)).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
            username, _, password = decoded.partition(":")
        identity = str(entry.get("identitytoken") or "")
        token = str(entry.get("registrytoken") or "")
        if username or identity or token:
            return Credentials(username, password, identity, token)
    return None


def docker_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def load_docker_config(path: Path | None = None) -> dict[str, Any]:
    """The local docker config document ({} when there is none or it is unreadable)."""
    path = path or docker_config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def docker_configs_from_pull_secrets(secrets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Docker config documents of Kubernetes Secrets (`.dockerconfigjson`, `.dockercfg`)."""
    documents: list[dict[str, Any]] = []
    for secret in secrets:
        data = secret.get("data") or {}
        for key in (".dockerconfigjson", ".dockercfg"):
            if key in data:
                try:
                    document = json.loads(base64.b64decode(str(data[key])))
                except (ValueError, TypeError):
                    name = (secret.get("metadata") or {}).get("name", "?")
                    logger.warning("image pull secret %s: %s is not valid JSON", name, key)
                    continue
                if isinstance(document, dict):
                    documents.append(document)
    return documents


async def helper_credentials(config: Mapping[str, Any], registry: str) -> Credentials | None:
    """Credentials from docker's credential helper for `registry` (credHelpers, credsStore)."""
    found = config.get("credHelpers")
    helpers: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    helper = None
    for key in _auth_keys(registry):
        if key in helpers:
            helper = helpers[key]
            break
    helper = helper or config.get("credsStore")
    if not helper or not re.fullmatch(r"[A-Za-z0-9_.-]+", str(helper)):
        return None
    server = DOCKER_HUB_AUTH_KEYS[0] if registry == DOCKER_HUB else registry
    try:
        process = await asyncio.create_subprocess_exec(
            f"docker-credential-{helper}",
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(server.encode()), TIMEOUT)
    except (OSError, TimeoutError) as e:
        logger.info("docker credential helper %s unusable: %s", helper, e)
        return None
    if process.returncode != 0:
        return None
    try:
        found = json.loads(out)
    except ValueError:
        return None
    username, secret = str(found.get("Username") or ""), str(found.get("Secret") or "")
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username, secret) if username or secret else None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(`bearer`/`basic`, parameters) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def platform_architecture() -> str:
    return _ARCH.get(platform.machine().lower(), "amd64")


def pick_manifest(index: Mapping[str, Any], architecture: str | None = None) -> str:
    """The digest of the linux/<architecture> entry of an index (else linux/amd64, else first)."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, Mapping)]
    wanted = architecture or platform_architecture()
    for arch in (wanted, "amd64"):
        for entry in entries:
            plat = entry.get("platform") or {}
            if plat.get("os", "linux") == "linux" and plat.get("architecture") == arch:
                return str(entry["digest"])
    images = [e for e in entries if (e.get("platform") or {}).get("architecture") != "unknown"]
    if not images:
        raise ImageUnavailable("the image index lists no image manifests")
    return str(images[0]["digest"])


def is_insecure(registry: str, environ: Mapping[str, str] | None = None) -> bool:
    """Plain HTTP for loopback registries (as Docker does) and FERRY_INSECURE_REGISTRIES."""
    env = os.environ if environ is None else environ
    listed = {h.strip() for h in env.get(ENV_INSECURE, "").split(",") if h.strip()}
    if registry in listed:
        return True
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    if host == "localhost" or host in listed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the client ---------------------------------------------------------------------------------


class RegistryClient:
    """Reads manifests and config blobs of one registry, handling its auth challenges."""

    def __init__(self, ref: ImageReference, credentials: Credentials | None) -> None:
        self.ref = ref
        self.credentials = credentials
        scheme = "http" if is_insecure(ref.registry) else "https"
        self.base = f"{scheme}://{ref.api_host}"
        self._client = httpx2.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        self._authorization: str | None = None
        if credentials is not None and credentials.registry_token:
            self._authorization = f"Bearer {credentials.registry_token}"

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, accept: Sequence[str] = ()) -> Any:
        url = f"{self.base}{path}"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        challenged = False
        while True:
            if self._authorization:
                headers["Authorization"] = self._authorization
            response = await self._follow(url, headers)
            if response.status_code != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            await response.aclose()
            if challenged:
                raise ImageUnavailable(
                    f"registry {self.ref.registry} refused access to {self.ref.repository} (401 "
                    "Unauthorized): check the credentials in the image pull secrets or "
                    f"{docker_config_path()} (`docker login {self.ref.registry}`)"
                )
            challenged = True
            self._authorization = await self._authenticate(challenge)

    async def _follow(self, url: str, headers: dict[str, str]) -> Any:
        """GET with redirects followed by hand: no Authorization header to another host."""
        origin = httpx2.URL(url).host
        for _ in range(5):
            request_headers = dict(headers)
            if httpx2.URL(url).host != origin:
                request_headers.pop("Authorization", None)
            response = await self._client.get(url, headers=request_headers)
            if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                url = str(response.url.join(response.headers["location"]))
                await response.aclose()
                continue
            return response
        raise ImageUnavailable(f"registry {self.ref.registry}: too many redirects for {url}")

    async def _authenticate(self, challenge: str) -> str:
        scheme, params = parse_challenge(challenge)
        creds = self.credentials
        if scheme == "basic":
            if creds is None or not creds.username:
                raise ImageUnavailable(
                    f"registry {self.ref.registry} needs a username and password for "
                    f"{self.ref.repository} and ferry has none: add an image pull secret or "
                    f"`docker login {self.ref.registry}`"
                )
            pair = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if scheme == "bearer" and params.get("realm"):
            return "Bearer " + await self._token(params)
        raise ImageUnavailable(
            f"registry {self.ref.registry} asked for unsupported authentication {challenge!r}"
        )

    async def _token(self, params: Mapping[str, str]) -> str:
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or f"repository:{self.ref.repository}:pull"
        creds = self.credentials
        auth = None
        if creds is not None and creds.identity_token:
            data = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "ferry",
                **query,
            }
            response = await self._client.post(params["realm"], data=data)
        else:
            if creds is not None and creds.username:
                auth = httpx2.BasicAuth(creds.username, creds.password)
            response = await self._client.get(params["realm"], params=query, auth=auth)
        if response.status_code in (401, 403):
            raise ImageUnavailable(
                f"the token service of {self.ref.registry} refused the credentials for "
                f"{self.ref.repository} ({response.status_code})"
            )
        if response.status_code >= 400:
            raise ImageUnavailable(
                f"the token service of {self.ref.registry} answered {response.status_code}"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ImageUnavailable(f"the token service of {self.ref.registry} returned no token")
        return str(token)

    async def _document(self, path: str, accept: Sequence[str] = ()) -> tuple[bytes, str]:
        response = await self._get(path, accept)
        try:
            if response.status_code == 404:
                raise ImageUnavailable(
                    f"image {self.ref} not found in its registry (404 for {path})"
                )
            if response.status_code >= 400:
                raise ImageUnavailable(
                    f"registry {self.ref.registry} answered {response.status_code} for {path}"
                )
            body = await response.aread()
        finally:
            await response.aclose()
        if len(body) > MAX_DOCUMENT:
            raise ImageUnavailable(f"registry {self.ref.registry}: {path} is too large")
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        return body, media

    async def manifest(self, reference: str) -> dict[str, Any]:
        body, media = await self._document(
            f"/v2/{self.ref.repository}/manifests/{reference}", MANIFEST_TYPES
        )
        if reference.startswith("sha256:"):
            _verify(body, reference, "manifest")
        document = _json(body, "manifest")
        document.setdefault("mediaType", media)
        return document

    async def blob(self, digest: str) -> dict[str, Any]:
        body, _ = await self._document(f"/v2/{self.ref.repository}/blobs/{digest}")
        _verify(body, digest, "config blob")
        return _json(body, "config blob")


def _verify(body: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256":
        return
    if hashlib.sha256(body).hexdigest() != expected:
        raise ImageUnavailable(f"the registry's {what} does not match its digest {digest}")


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise ImageUnavailable(f"the registry's {what} is not JSON") from None
    if not isinstance(document, dict):
        raise ImageUnavailable(f"the registry's {what} is not a JSON object")
    return document


async def fetch_image_config(
    image: str,
    *,
    docker_configs: Sequence[Mapping[str, Any]] = (),
    use_local_config: bool = True,
    architecture: str | None = None,
) -> dict[str, Any]:
    """The `config` object (Entrypoint, Cmd, Env, ...) of `image` from its registry.

    Credentials: the first of `docker_configs` (e.g. from image pull secrets) that has some for
    the registry, then the local docker config and its credential helpers.
    """
    ref = parse_reference(image)
    credentials = None
    for document in docker_configs:
        credentials = credentials_from_docker_config(document, ref.registry)
        if credentials is not None:
            break
    if credentials is None and use_local_config:
        local = load_docker_config()
        credentials = credentials_from_docker_config(local, ref.registry)
        if credentials is None:
            credentials = await helper_credentials(local, ref.registry)
    client = RegistryClient(ref, credentials)
    try:
        manifest = await client.manifest(ref.reference)
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            manifest = await client.manifest(pick_manifest(manifest, architecture))
        config = manifest.get("config") or {}
        digest = config.get("digest")
        if not digest:
            raise ImageUnavailable(f"the manifest of {ref} names no config blob")
        blob = await client.blob(str(digest))
    except httpx2.HTTPError as e:
        raise RuntimeUnavailable(f"cannot read image {ref} from its registry: {e}") from None
    finally:
        await client.close()
    found = blob.get("config") or {}
    return dict(found) if isinstance(found, Mapping) else {}
