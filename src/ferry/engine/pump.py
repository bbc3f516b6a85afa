"""The data path: source stdout → destination stdin, routed by envelope, bytes unchanged.

Chunks of up to CHUNK_SIZE bytes are cut at the last newline. All complete lines of a chunk are
decoded in ONE msgspec call as a JSON array of envelopes (type, record stream, namespace); the
rest of each line is skipped by the parser, not built. Records are counted per stream at C speed
(Counter over the envelopes' stream keys) and the original bytes are forwarded; a chunk is only
rebuilt when it holds a line that must not reach the destination (LOG, TRACE, non-JSON text).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from itertools import compress
from operator import attrgetter

from ferry.engine.ledger import StateLedger, decode_state_line, state_streams
from ferry.engine.stats import StreamStats, SyncStats
from ferry.errors import DecodeError, ProtocolViolation
from ferry.protocol import decode_envelope, decode_envelopes, decode_message
from ferry.protocol.messages import (
    RECORD,
    STATE,
    STATE_STREAM,
    AirbyteMessage,
    AirbyteStateMessage,
    Envelope,
    RoutingRecord,
)
from ferry.runtimes.base import ByteReader, ByteWriter

CHUNK_SIZE = 1 << 20
# A single line may be huge (100 MB records exist); beyond this it is a runaway connector.
MAX_LINE_BYTES = 512 << 20

_record_of = attrgetter("record")
_NOT_JSON = Envelope(type="")  # stands for a line that is connector log text, not a message

MessageHandler = Callable[[AirbyteMessage], None]
TextHandler = Callable[[str], None]

logger = logging.getLogger("ferry.pump")


async def complete_lines(reader: ByteReader, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Blocks of whole lines (each ending in b"\\n"); a last unterminated line gets one."""
    partial: list[bytes] = []
    partial_size = 0
    while chunk := await reader.read(chunk_size):
        end = chunk.rfind(b"\n")
        if end < 0:
            partial.append(chunk)
            partial_size += len(chunk)
            if partial_size > MAX_LINE_BYTES:
                raise ProtocolViolation(f"a line longer than {MAX_LINE_BYTES} bytes; giving up")
            continue
        head = chunk if end == len(chunk) - 1 else chunk[: end + 1]
        if partial:
            partial.append(head)
            head = b"".join(partial)
            partial, partial_size = [], 0
        if end != len(chunk) - 1:
            partial, partial_size = [chunk[end + 1 :]], len(chunk) - end - 1
        yield head
    if partial:
        yield b"".join(partial) + b"\n"


def decode_block(block: bytes) -> list[Envelope] | None:
    """Envelopes of every line of a block in one call, or None if some line is not a message.

    Newlines become commas, so the block parses as one JSON array: JSON text cannot hold a raw
    newline, so each line is exactly one element unless a line is not a single message, which
    the element count catches.
    """
    try:
        envelopes = decode_envelopes(b"[" + block[:-1].replace(b"\n", b",") + b"]")
    except DecodeError:
        return None
    return envelopes if len(envelopes) == block.count(b"\n") else None


def split_envelopes(
    block: bytes, envelopes: list[Envelope] | None = None
) -> tuple[list[bytes], list[Envelope]]:
    """The lines of a block (without newlines) and their envelopes; text lines get _NOT_JSON.

    `envelopes`, when the caller has already decoded the block with `decode_block`.
    """
    lines = block.split(b"\n")
    lines.pop()  # the block ends with a newline
    if envelopes is None:
        envelopes = decode_block(block)
    if envelopes is not None:
        return lines, envelopes
    envelopes = []
    for line in lines:
        try:
            envelopes.append(decode_envelope(line) if line.strip() else _NOT_JSON)
        except DecodeError:
            envelopes.append(_NOT_JSON)
    return lines, envelopes


class SourceRouter:
    """Routes the source's output: what goes to the destination and what is logged or counted."""

    def __init__(
        self,
        stats: SyncStats,
        ledger: StateLedger,
        on_message: MessageHandler,
        on_text: TextHandler,
    ) -> None:
        self.stats = stats
        self.ledger = ledger
        self.on_message = on_message
        self.on_text = on_text
        self._known: dict[RoutingRecord, StreamStats] = {}
        for stream in stats.streams.values():
            self._known[RoutingRecord(stream.name, stream.namespace)] = stream

    def route(self, block: bytes) -> bytes:
        """Bytes to forward for a block of whole lines (possibly b"")."""
        envelopes = decode_block(block)
        if envelopes is not None and self._only_records_of_one_stream(envelopes, block):
            return block
        lines, envelopes = split_envelopes(block, envelopes)
        records = list(map(_record_of, envelopes))
        dropped = False
        start = 0
        while True:
            try:
                index = records.index(None, start)
            except ValueError:
                self._count(lines, records, start, len(records))
                break
            self._count(lines, records, start, index)
            dropped |= not self._other(envelopes[index].type, lines[index])
            start = index + 1
        if not dropped:
            return block
        kept = [line for line, e in zip(lines, envelopes, strict=True) if e.type in (RECORD, STATE)]
        return b"\n".join(kept) + b"\n" if kept else b""

    def _only_records_of_one_stream(self, envelopes: list[Envelope], block: bytes) -> bool:
        """The common case, counted without splitting the block into lines."""
        first = envelopes[0].record
        if first is None or list(map(_record_of, envelopes)).count(first) != len(envelopes):
            return False
        stream = self._known.get(first) or self._resolve(first)
        stream.records += len(envelopes)
        stream.records_since_state += len(envelopes)
        stream.bytes += len(block)
        self.stats.records_since_state += len(envelopes)
        return True

    def _count(
        self, lines: list[bytes], records: list[RoutingRecord | None], a: int, b: int
    ) -> None:
        if a == b:
            return
        segment = records[a:b]
        counts = Counter(segment)
        lengths = list(map(len, lines[a:b]))
        for key, count in counts.items():
            stream = self._known.get(key) or self._resolve(key)  # type: ignore[arg-type]
            stream.records += count
            stream.records_since_state += count
            if len(counts) == 1:
                stream.bytes += sum(lengths) + len(lengths)
            else:
                stream.bytes += sum(compress(lengths, map(key.__eq__, segment))) + count
        self.stats.records_since_state += b - a

    def _resolve(self, key: RoutingRecord) -> StreamStats:
        for stream in self.stats.streams.values():
            if stream.name == key.stream and key.namespace is None:
                self._known[key] = stream
                return stream
        configured = ", ".join(sorted(s.name for s in self.stats.streams.values()))
        where = f"{key.namespace}.{key.stream}" if key.namespace else key.stream
        raise ProtocolViolation(
            f"the source emitted a record for stream {where!r}, which is not in the configured "
            f"catalog ({configured})"
        )

    def _other(self, kind: str, line: bytes) -> bool:
        """Handle a non-record line; True when it is forwarded to the destination."""
        if kind == STATE:
            self._state(decode_state_line(line))
            return True
        if kind == "":
            if line.strip():
                self.stats.log_lines += 1
                self.on_text(line.decode("utf-8", "replace"))
            return False
        try:
            message = decode_message(line)
        except DecodeError:
            self.on_text(line.decode("utf-8", "replace"))
            return False
        self.on_message(message)
        return False

    def _state(self, state: AirbyteStateMessage) -> None:
        expected = state.sourceStats.recordCount if state.sourceStats else None
        streams = [self.stats.stream(d.name, d.namespace) for d in state_streams(state)]
        if state.type == STATE_STREAM and streams:
            counted = streams[0].records_since_state
            streams[0].records_since_state = 0
            streams[0].states_sent += 1
        else:
            counted = self.stats.records_since_state
            for stream in self.stats.streams.values():
                stream.records_since_state = 0
        if expected is not None and int(expected) != counted:
            self.stats.mismatches.append(
                f"source said {int(expected)} records before state #{self.ledger.sent + 1}"
                f" ({_describe(state)}), ferry counted {counted}"
            )
        self.stats.records_since_state = 0
        self.stats.states_sent += 1
        self.ledger.record_sent(state, counted)


def _describe(state: AirbyteStateMessage) -> str:
    names = [d.name for d in state_streams(state)]
    kind = state.type or "LEGACY"
    return f"{kind} {', '.join(names)}" if names else kind


async def pump(source: ByteReader, destination: ByteWriter, router: SourceRouter) -> None:
    """Move every block from the source to the destination until the source's EOF."""
    async for block in complete_lines(source):
        forward = router.route(block)
        if forward:
            await destination.write(forward)
