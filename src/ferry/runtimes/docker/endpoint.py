"""Async raw connections to the Docker engine, for what must not block a thread.

The docker SDK is blocking; ferry uses it for short control calls (create, put_archive, start,
stop) in worker threads. The long-lived calls — the attach streams and the wait for a
container's end — go over asyncio connections to the same endpoint the SDK resolved
(unix socket, tcp or tcp+TLS), so they cost no thread and are cancellable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ferry.errors import RuntimeUnavailable
from ferry.runtimes.base import StderrLines
from ferry.runtimes.docker.attach import (
    MAX_RESPONSE_HEAD,
    AttachProtocol,
    OutputStream,
    engine_message,
    parse_response_head,
)

WRITE_HIGH_WATER = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    """Where the engine listens, as resolved by the SDK client."""

    url: str  # for messages: unix:///var/run/docker.sock, tcp://host:2376
    api_version: str
    unix_path: str | None = None
    host: str = ""
    port: int = 0
    ssl_context: ssl.SSLContext | None = None

    @property
    def host_header(self) -> str:
        return "docker" if self.unix_path is not None else f"{self.host}:{self.port}"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} /v{self.api_version}{path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _unreachable(self, error: OSError) -> RuntimeUnavailable:
        return RuntimeUnavailable(
            f"cannot connect to the Docker engine at {self.url}: {error}; is dockerd still running?"
        )

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if self.unix_path is not None:
                return await asyncio.open_unix_connection(self.unix_path)
            return await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context)
        except OSError as e:
            raise self._unreachable(e) from None

    async def open_attach(
        self, container_id: str, stdout: OutputStream, stderr: StderrLines
    ) -> AttachProtocol:
        """Attach to stdout+stderr of a created container; returns once the stream is live."""
        request = self.request(
            "POST",
            f"/containers/{container_id}/attach?stream=1&stdout=1&stderr=1",
            {"Content-Length": "0", "Connection": "Upgrade", "Upgrade": "tcp"},
        )
        loop = asyncio.get_running_loop()

        def factory() -> AttachProtocol:
            return AttachProtocol(request, stdout, stderr)

        try:
            if self.unix_path is not None:
                _, protocol = await loop.create_unix_connection(factory, self.unix_path)
            else:
                _, protocol = await loop.create_connection(
                    factory, self.host, self.port, ssl=self.ssl_context
                )
        except OSError as e:
            raise self._unreachable(e) from None
        try:
            await protocol.upgraded
        except BaseException:
            protocol.close()
            raise
        return protocol

    async def open_stdin(self, container_id: str) -> StdinStream:
        """Attach to the stdin of a created container (a write-only connection)."""
        reader, writer, _ = await self._post(
            f"/containers/{container_id}/attach?stream=1&stdin=1",
            {"Connection": "Upgrade", "Upgrade": "tcp"},
            ok=(101, 200),
            refused="attach stdin",
        )
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        return StdinStream(reader, writer)

    async def start_wait(self, container_id: str, condition: str) -> asyncio.Task[int]:
        """Register a wait for `condition`; the task resolves to the exit code.

        Returns once the engine has registered the wait (it sends the response head first), so
        a container started afterwards cannot end unseen.
        """
        reader, writer, headers = await self._post(
            f"/containers/{container_id}/wait?condition={condition}",
            {"Connection": "close"},
            ok=(200,),
            refused=f"wait for container {container_id[:12]}",
        )

        async def result() -> int:
            try:
                body = await _read_body(reader, headers)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                raise RuntimeUnavailable(
                    f"lost the Docker engine while waiting for container {container_id[:12]}: {e}"
                ) from None
            finally:
                writer.close()
            try:
                value: Any = json.loads(body)
                code = int(value["StatusCode"])
            except (ValueError, KeyError, TypeError):
                raise RuntimeUnavailable(
                    f"unexpected wait answer from the Docker engine: {body[:200]!r}"
                ) from None
            error = value.get("Error")
            if isinstance(error, dict) and error.get("Message"):
                raise RuntimeUnavailable(
                    f"the Docker engine failed waiting for container {container_id[:12]}: "
                    f"{error['Message']}"
                )
            return code

        return asyncio.ensure_future(result())

    async def _post(
        self, path: str, headers: dict[str, str], *, ok: tuple[int, ...], refused: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
        """POST `path` (no body) on a connection of its own; the connection and the response's
        headers once the engine answered with an `ok` status."""
        reader, writer = await self.open_stream()
        try:
            writer.write(self.request("POST", path, {"Content-Length": "0", **headers}))
            status, status_line, response = await read_head(reader)
            if status not in ok:
                body = await _error_body(reader, response)
                raise RuntimeUnavailable(
                    f"the Docker engine refused to {refused}: {status_line}: {body}"
                )
        except BaseException:
            writer.close()
            raise
        return reader, writer, response


class StdinStream:
    """A ByteWriter on a hijacked stdin attach connection; closing it is the connector's EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def write(self, data: bytes) -> None:
        """Raises BrokenPipeError once the connector is gone (learn how it ended from wait)."""
        if self._closed:
            raise BrokenPipeError("the connector's stdin is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as e:
            raise BrokenPipeError(f"the connector's stdin is closed ({e})") from None

    def abort(self) -> None:
        """Drop the connection now (cleanup after a failed start or a terminate)."""
        self._closed = True
        # Also when a close() is under way: a graceful close waits for the engine to take the
        # buffered bytes, which it never does for a dead container (that close hung forever).
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close the connection: the engine then closes the container's stdin (StdinOnce)."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        try:
            if writer.can_write_eof():
                # FIN first, so everything written reaches the engine before the close.
                writer.write_eof()
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        writer.close()
        with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
            await writer.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Read an HTTP response head: status, status line and lower-cased headers."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise RuntimeUnavailable(
            f"the Docker engine closed the connection mid-answer ({len(e.partial)} bytes)"
        ) from None
    except asyncio.LimitOverrunError:
        raise RuntimeUnavailable(
            f"the Docker engine sent a response head over {MAX_RESPONSE_HEAD} bytes"
        ) from None
    except OSError as e:
        raise RuntimeUnavailable(f"lost the Docker engine: {e}") from None
    return parse_response_head(head[:-4])


async def _error_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> str:
    """The engine's message in an error response (best effort, bounded in time)."""
    try:
        return engine_message(await asyncio.wait_for(_read_body(reader, headers), 10))
    except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
        return "(no details)"
    except asyncio.LimitOverrunError:
        return "(no details)"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The rest of a response body: chunked, sized or delimited by the connection's end."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


def endpoint_of(api: Any) -> Endpoint:
    """The endpoint an SDK `APIClient` talks to (unix socket, tcp, tcp+TLS)."""
    version = str(api.api_version)
    base = str(api.base_url)
    adapter = getattr(api, "_custom_adapter", None)
    socket_path = getattr(adapter, "socket_path", None)
    if base == "http+docker://localhost" and isinstance(socket_path, str):
        return Endpoint(url=f"unix://{socket_path}", api_version=version, unix_path=socket_path)
    if base.startswith(("http://", "https://")):
        parts = urlsplit(base)
        tls = parts.scheme == "https"
        port = parts.port or (2376 if tls else 2375)
        host = parts.hostname or "localhost"
        context = _ssl_context(api) if tls else None
        return Endpoint(
            url=f"tcp://{host}:{port}",
            api_version=version,
            host=host,
            port=port,
            ssl_context=context,
        )
    raise RuntimeUnavailable(
        f"ferry streams connector data over a unix socket or tcp, not {base!r} "
        "(ssh:// and npipe:// engines are not supported): forward the engine's socket "
        "(e.g. `ssh -L /tmp/docker.sock:/var/run/docker.sock host`) and set "
        "DOCKER_HOST=unix:///tmp/docker.sock"
    )


def _ssl_context(api: Any) -> ssl.SSLContext:
    verify = getattr(api, "verify", True)
    cert = getattr(api, "cert", None)
    if isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context()
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if isinstance(cert, tuple | list) and len(cert) == 2:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    elif isinstance(cert, str):
        context.load_cert_chain(cert)
    return context
