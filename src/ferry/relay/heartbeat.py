"""The heartbeat endpoint, served on the relay listener's port (no second port).

The listener sniffs each connection's first line: `FERRY-RELAY/1 ...` is a relay handshake,
`GET ...` is HTTP from a heartbeat sidecar (busybox wget). Two requests exist:

    GET /heartbeat/<token>        200 while the token is registered, 410 once it is unknown/expired
    GET /exit/<token>/<code>      the wrapper's exit code (0-255), reported once the connector is
                                  gone: 200, 410 for an unknown token, 400 for a bad code

A 410 makes the heartbeat sidecar write the termination marker at once, so unregistering a token
stops a connector that is still running. Each response closes the connection. The single
pod's pump has no heartbeat sidecar: it sends the same requests itself (`request_status`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

MAX_HEADER_BYTES = 8192


class HeartbeatTarget(Protocol):
    def heartbeat(self) -> None:
        """A heartbeat probe arrived."""
        ...

    def report_exit(self, code: int) -> None:
        """The heartbeat sidecar reported the connector's exit code."""
        ...


TargetLookup = Callable[[str], HeartbeatTarget | None]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 410: "Gone"}


def is_http(first_line: bytes) -> bool:
    """Whether a connection's first line looks like an HTTP request line."""
    return first_line.startswith((b"GET ", b"HEAD ", b"POST ", b"PUT "))


def handle_request(first_line: bytes, lookup: TargetLookup) -> tuple[int, str]:
    """Status and body for an HTTP request line (`GET /path HTTP/1.x`)."""
    parts = first_line.decode("ascii", errors="replace").strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return 400, "malformed request line"
    method, target, _ = parts
    if method != "GET":
        return 405, "only GET is served"
    segments = target.split("?", 1)[0].strip("/").split("/")
    if len(segments) == 2 and segments[0] == "heartbeat":
        registration = lookup(segments[1])
        if registration is None:
            return 410, "unknown or expired token"
        registration.heartbeat()
        return 200, "ok"
    if len(segments) == 3 and segments[0] == "exit":
        registration = lookup(segments[1])
        if registration is None:
            return 410, "unknown or expired token"
        code = segments[2]
        if not code.isdigit() or int(code) > 255:
            return 400, "exit code must be 0-255"
        registration.report_exit(int(code))
        return 200, "ok"
    return 404, "not found"


def response_bytes(status: int, body: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    payload = (body + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def heartbeat_path(token: str) -> str:
    return f"/heartbeat/{token}"


def exit_path(token: str, code: int) -> str:
    return f"/exit/{token}/{code}"


async def request_status(host: str, port: int, path: str, timeout: float) -> int | None:  # noqa: ASYNC109
    """GET `path` from ferry's relay port: the HTTP status, None without an answer within
    `timeout` seconds. The client side of this endpoint for a program that has Python (the
    single pod's pump); the heartbeat sidecar uses busybox wget."""
    request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):  # refused, reset, no answer
        return None
    parts = status_line.split(b" ")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
