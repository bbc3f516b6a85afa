"""Docker attach streams over raw sockets: the HTTP upgrade, the frame demuxer and the buffers.

Without a TTY the engine multiplexes a container's stdout and stderr on one connection: each
frame is an 8-byte header (stream type in byte 0, payload length big-endian in bytes 4-7)
followed by the payload. `Demuxer` walks the frames of each received chunk with memoryview
slices (no per-byte work) and `AttachProtocol` hands stdout to a bounded `OutputStream`
(pausing the socket when the consumer is behind: backpressure reaches the container) and stderr
to `StderrLines` (runtimes.base), which cuts it into lines for the log sink and the stderr tail.
"""

from __future__ import annotations

import asyncio
import collections
import json
import struct

from ferry.errors import InternalError, RuntimeUnavailable
from ferry.runtimes.base import StderrLines

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
_HEADER = struct.Struct(">BxxxL")
HEADER_SIZE = _HEADER.size  # 8

# Stdout bytes buffered before the socket is paused; reading resumes below half of it.
OUTPUT_HIGH_WATER = 4 << 20
READ_SIZE = 1 << 20
MAX_RESPONSE_HEAD = 64 << 10
# A stderr "line" longer than this is logged in pieces rather than held forever.


class Demuxer:
    """Split Docker's multiplexed stream into stdout and stderr payload pieces.

    Frames may be cut anywhere by the transport, headers included; the state between chunks is
    the current stream type, the bytes left in its frame and a partial header.
    """

    __slots__ = ("_partial_header", "_remaining", "_stream")

    def __init__(self) -> None:
        self._stream = STDOUT
        self._remaining = 0
        self._partial_header = b""

    @property
    def in_frame(self) -> bool:
        """True when the stream stopped inside a frame (a truncated stream)."""
        return self._remaining > 0 or bool(self._partial_header)

    def feed(self, data: bytes | memoryview) -> tuple[list[memoryview], list[memoryview]]:
        """The stdout and the stderr payload pieces of `data`, in order.

        The pieces are views into `data`: copy them before `data` is reused.
        """
        out: list[memoryview] = []
        err: list[memoryview] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        if self._partial_header:
            need = HEADER_SIZE - len(self._partial_header)
            self._partial_header += bytes(data[:need])
            pos = min(need, end)
            if len(self._partial_header) < HEADER_SIZE:
                return out, err
            self._stream, self._remaining = _HEADER.unpack(self._partial_header)
            self._partial_header = b""
        stream = self._stream
        remaining = self._remaining
        unpack_from = _HEADER.unpack_from
        while pos < end:
            if remaining == 0:
                if end - pos < HEADER_SIZE:
                    self._partial_header = bytes(data[pos:end])
                    break
                stream, remaining = unpack_from(data, pos)
                pos += HEADER_SIZE
                continue
            stop = pos + remaining if remaining < end - pos else end
            if stream <= STDOUT:  # STDIN (0) appears only as echoed input: stdout
                out.append(view[pos:stop])
            else:
                err.append(view[pos:stop])
            remaining -= stop - pos
            pos = stop
        self._stream = stream
        self._remaining = remaining
        return out, err


class OutputStream:
    """A ByteReader over a connector's stdout with a bounded buffer (pauses the transport)."""

    def __init__(self, high_water: int = OUTPUT_HIGH_WATER) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._high = high_water
        self._low = high_water // 2
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._paused = False

    def attach_transport(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def feed(self, data: bytes) -> None:
        if self._eof:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size >= self._high and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def discard(self) -> None:
        """Drop what is buffered and everything still to come (the reader went away)."""
        self._chunks.clear()
        self._size = 0
        self._eof = True
        self._wake()
        self._resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all that is buffered when n < 0); b"" only at end of stream."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        first = chunks[0]
        if n < 0:
            n = self._size
        if len(first) >= n:
            if len(first) == n:
                data = chunks.popleft()
            else:
                data = first[:n]
                chunks[0] = first[n:]
        else:
            pieces = [chunks.popleft()]
            total = len(first)
            while chunks and total + len(chunks[0]) <= n:
                piece = chunks.popleft()
                pieces.append(piece)
                total += len(piece)
            data = b"".join(pieces) if len(pieces) > 1 else pieces[0]
        self._size -= len(data)
        if self._size <= self._low:
            self._resume()
        return data


def parse_response_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status code, status line and lower-cased headers of an HTTP response head."""
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise RuntimeUnavailable(
            f"the Docker engine answered with something that is not HTTP: {status_line[:80]!r}"
        ) from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, status_line, headers


def engine_message(body: bytes) -> str:
    """The `message` of an engine's JSON error body, or the body itself."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    message = value.get("message") if isinstance(value, dict) else None
    if isinstance(message, str):
        return message
    return text


class AttachProtocol(asyncio.BufferedProtocol):
    """One hijacked `/containers/{id}/attach` connection carrying stdout and stderr.

    Sends the upgrade request on connect; `upgraded` resolves once the engine switched the
    connection to the raw stream, `finished` once the stream ended (the container's stdout and
    stderr are closed and everything was routed). The socket is read straight into one
    reused buffer (no allocation per read); stdout pieces are copied out once, joined.
    """

    def __init__(self, request: bytes, stdout: OutputStream, stderr: StderrLines) -> None:
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.truncated = False
        self._request = request
        self._stdout = stdout
        self._stderr = stderr
        self._demux = Demuxer()
        self._head: bytes | None = b""
        self._transport: asyncio.Transport | None = None
        self._buffer = memoryview(bytearray(READ_SIZE))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise InternalError(f"the attach stream needs a socket transport, got {transport!r}")
        self._transport = transport
        self._stdout.attach_transport(transport)
        transport.write(self._request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received(self._buffer[:nbytes])

    def _received(self, data: bytes | memoryview) -> None:
        if self._head is not None:
            head = self._head + bytes(data)
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                if len(head) > MAX_RESPONSE_HEAD:
                    self._fail("an oversized response head")
                return
            self._head = None
            status, status_line, _ = parse_response_head(head[:end])
            rest = head[end + 4 :]
            if status not in (101, 200):
                self._fail(f"{status_line}: {engine_message(rest)}")
                return
            if not self.upgraded.done():
                self.upgraded.set_result(None)
            if not rest:
                return
            data = rest
        out, err = self._demux.feed(data)
        if out:
            self._stdout.feed(out[0].tobytes() if len(out) == 1 else b"".join(out))
        for piece in err:
            self._stderr.feed(piece)

    def _fail(self, reason: str) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(
                RuntimeUnavailable(f"the Docker engine refused to attach: {reason}")
            )
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: the stream is over

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            detail = f": {exc}" if exc else ""
            self.upgraded.set_exception(
                RuntimeUnavailable(f"the Docker engine closed the attach connection{detail}")
            )
            # Nobody awaits `upgraded` after a failure in start(); mark it retrieved.
            self.upgraded.exception()
        self.truncated = self._demux.in_frame
        self._stdout.feed_eof()
        self._stderr.flush()
        if not self.finished.done():
            self.finished.set_result(None)
