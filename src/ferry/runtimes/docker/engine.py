"""The Docker engine as ferry's runtimes use it: one client, its failures as ferry's errors.

`DockerEngine` is what plain containers (`runtime`) and relay mode (`relay`) share: the SDK
client (`docker.from_env()`, so DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH select the
engine) for short control calls in worker threads, the raw `Endpoint` for the long-lived ones
(attach, wait), images checked against the `pull` policy, the connector's files uploaded into a
created container, and stop/remove. Every SDK failure becomes a FerryError naming the action.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import tarfile
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from ferry.errors import ConfigError, FerryError, ImageUnavailable, RuntimeUnavailable
from ferry.runtimes.docker.containers import (
    FILES_DIR,
    files_archive,
    lookup_ids,
    parse_user,
)
from ferry.runtimes.docker.endpoint import Endpoint, endpoint_of

T = TypeVar("T")


class DockerEngine:
    """One connection to the engine, opened on first use and kept until `close()`."""

    def __init__(self) -> None:
        self._client: Any = None
        self._endpoint: Endpoint | None = None
        self._lock = asyncio.Lock()
        self._images: dict[str, Mapping[str, Any]] = {}

    async def connect(self) -> tuple[Any, Endpoint]:
        """The SDK client and the raw endpoint, connecting on first use."""
        async with self._lock:
            if self._client is None or self._endpoint is None:
                client = await asyncio.to_thread(connect)
                try:
                    endpoint = endpoint_of(client.api)
                except BaseException:
                    client.close()
                    raise
                self._client, self._endpoint = client, endpoint
            return self._client, self._endpoint

    async def api(self) -> Any:
        """The SDK's low-level APIClient."""
        client, _ = await self.connect()
        return client.api

    async def endpoint(self) -> Endpoint:
        _, endpoint = await self.connect()
        return endpoint

    async def call(self, action: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking SDK call in a worker thread, its failures mapped onto ferry's errors."""
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except FerryError:
            raise
        except Exception as e:
            raise engine_error(action, e) from None

    async def image_config(self, image: str, policy: str) -> Mapping[str, Any]:
        """The image's config (Entrypoint, Env, User), after applying the pull policy."""
        cached = self._images.get(image)
        if cached is not None and policy != "always":
            return cached
        info = None if policy == "always" else await self.inspect_image(image)
        if info is None:
            if policy == "never":
                raise ImageUnavailable(
                    f"image {image} is not available locally and the pull policy is 'never': "
                    f"build or load it (docker build / docker load), or set `pull: if-not-present`"
                )
            await self._pull(image, policy)
            info = await self.inspect_image(image)
            if info is None:
                raise ImageUnavailable(f"image {image} was pulled but cannot be found afterwards")
        config: Mapping[str, Any] = info.get("Config") or {}
        self._images[image] = config
        return config

    async def inspect_image(self, image: str) -> Mapping[str, Any] | None:
        """`docker image inspect`, or None when the engine does not have the image."""
        api = await self.api()
        try:
            info: Mapping[str, Any] = await asyncio.to_thread(api.inspect_image, image)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            if e.status_code == 404:
                return None
            raise engine_error(f"inspect image {image}", e) from None
        except Exception as e:
            raise engine_error(f"inspect image {image}", e) from None
        return info

    async def _pull(self, image: str, policy: str) -> None:
        api = await self.api()

        def pull() -> None:
            for event in api.pull(image, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise PullFailed(str(event["error"]))

        try:
            await asyncio.to_thread(pull)
        except Exception as e:
            reason = str(e) if isinstance(e, PullFailed) else _explain(e)
            raise ImageUnavailable(
                f"image {image} could not be pulled (pull policy '{policy}'): {reason.strip()}; "
                "check the image name and that its registry is reachable (and `docker login`), "
                "or build/load the image locally and set `pull: never`"
            ) from None

    async def put_archive(self, container_id: str, archive: bytes, what: str) -> None:
        """Extract a tar at `/` of a created container."""
        api = await self.api()
        ok = await self.call(f"upload {what}", api.put_archive, container_id, "/", archive)
        if not ok:
            raise RuntimeUnavailable(f"the Docker engine refused {what}")

    async def upload_files(
        self, container_id: str, files: Mapping[str, bytes], config: Mapping[str, Any]
    ) -> None:
        """The connector's files as FILES_DIR/NAME.json, readable by the image's USER only."""
        uid, gid = await self._file_owner(container_id, str(config.get("User") or ""))
        archive, _ = files_archive(files, uid, gid)
        await self.put_archive(container_id, archive, f"the connector's files in {FILES_DIR}")

    async def _file_owner(self, container_id: str, user: str) -> tuple[int, int]:
        """uid:gid for the uploaded files: the image's USER (so it can read 0600 files), else root."""
        if not user:
            return 0, 0
        name, group = parse_user(user)
        if name.isdigit() and (not group or group.isdigit()):
            return int(name), int(group) if group else 0
        passwd = await self._read_text(container_id, "/etc/passwd")
        groups = await self._read_text(container_id, "/etc/group") if group else ""
        ids = lookup_ids(user, passwd, groups)
        # Unknown users make the engine refuse to start the container with its own clear error.
        return ids if ids is not None else (0, 0)

    async def _read_text(self, container_id: str, path: str) -> str:
        api = await self.api()

        def read() -> str:
            try:
                chunks, _ = api.get_archive(container_id, path)
            except docker.errors.NotFound:
                return ""
            data = b"".join(chunks)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        return handle.read().decode("utf-8", errors="replace")
            return ""

        return await self.call(f"read {path} of the image", read)

    async def stop(self, container_id: str, grace: float) -> None:
        """`docker stop -t grace`: TERM, then KILL; nothing if the container is gone."""
        api = await self.api()
        with contextlib.suppress(docker.errors.NotFound):
            await self.call("stop a container", api.stop, container_id, timeout=math.ceil(grace))

    async def remove(self, container_id: str, *, volumes: bool = False) -> None:
        """Force-remove a container; nothing if it is gone (or already being removed)."""
        api = await self.api()
        try:
            await asyncio.to_thread(api.remove_container, container_id, force=True, v=volumes)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress (AutoRemove)
                raise engine_error("remove a container", e) from None

    async def close(self) -> None:
        client, self._client, self._endpoint = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)


class PullFailed(Exception):
    """A pull stream reported an error."""


def _explain(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError):
        return str(error.explanation or error)
    return str(error)


def engine_error(action: str, error: BaseException) -> FerryError:
    """A FerryError a user can act on for an SDK failure while doing `action`."""
    if isinstance(error, docker.errors.APIError):
        status = error.status_code or 0
        detail = _explain(error)
        # A 4xx answer means the request was wrong: the connector's options, its image name,
        # except a conflict (409: a name in use, a removal in progress), which is the engine's.
        if 400 <= status < 500 and status != 409:
            return ConfigError(f"Docker could not {action}: {detail}")
        return RuntimeUnavailable(f"Docker could not {action}: {detail}")
    if isinstance(error, requests.exceptions.ConnectionError | OSError):
        return RuntimeUnavailable(f"lost the Docker engine trying to {action}: {error}")
    return RuntimeUnavailable(f"Docker could not {action}: {error}")


class _EngineApi(docker.APIClient):
    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace the session's CA whenever a
        # call passes no `verify` (every SDK call): keep DOCKER_CERT_PATH's ca.pem.
        verify = self.verify if verify is None else verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


class _EngineClient(docker.DockerClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.api = _EngineApi(*args, **kwargs)


def connect() -> Any:
    """A docker client from the environment, or RuntimeUnavailable saying what to do."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = _EngineClient.from_env()
    except docker.errors.DockerException as e:
        raise RuntimeUnavailable(
            f"cannot reach the Docker engine at {host}: {_root_cause(e)}. "
            "Is Docker installed and dockerd running (`docker info` should answer; start it with "
            "`sudo systemctl start docker` or `sudo dockerd &`)? "
            "For a remote engine, check DOCKER_HOST (and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH)."
        ) from None
    return client


def _root_cause(error: BaseException) -> str:
    text = str(error)
    for marker in ("Connection refused", "No such file or directory", "Permission denied"):
        if marker in text:
            if marker == "Permission denied":
                return (
                    "permission denied on the engine's socket (add your user to the `docker` group)"
                )
            return marker.lower()
    return text
