"""The data path: source stdout → destination stdin, routed by envelope, bytes unchanged.

RECORD and STATE lines reach the destination, in their order (a STATE without
`sourceStats.recordCount` gets it, as the platform adds it); LOG, TRACE and CONTROL lines and text
go to ferry only.

Chunks of up to CHUNK_SIZE bytes are cut at the last newline. All complete lines of a chunk are
decoded in ONE msgspec call as a JSON array of envelopes (type, record stream, namespace); the
rest of each line is skipped by the parser, not built. The block is never split into lines on
the common paths:
- every line a record of one stream (most blocks): counted from the envelope list and the
  block's length, forwarded as it is;
- records and a few other lines (a STATE every N records): the other lines are found by
  searching the block for their type name and checking each candidate line's own envelope, so
  their byte offsets are known without splitting; the records between them are counted per
  segment, and a block is only rebuilt when a line must not reach the destination (LOG,
  TRACE, CONTROL) or a STATE gets its sourceStats;
- otherwise (records of several streams interleaved, text lines, an unknown or escaped type)
  the block is split into lines and routed line by line, with the same results.

Measured on this project's 2-core VM (200-byte records, 2 streams, a STATE every 10 000
records): in-process, 43 M instructions per MB routed before these paths (valgrind), 26 M after;
in a real `ferry sync`, ferry's CPU went from ~5.5 to ~3 ms per MB. The msgspec parse of the
envelopes is most of what is left (~35% of ferry's CPU), then the kernel's pipe copies (~18%).
See benchmarks/README.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from itertools import compress
from operator import attrgetter

import msgspec

from ferry.engine.ledger import StateLedger, decode_state_line
from ferry.engine.stats import StreamStats, SyncStats
from ferry.errors import DecodeError, ProtocolViolation
from ferry.protocol import decode_envelope, decode_message
from ferry.protocol.decode import decode_known_envelopes
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
from ferry.store.state import streams_touched

# 256 KiB: a block, its JSON-array copies and the envelopes stay in the CPU caches; measured
# here against 64 KiB .. 4 MiB, it needs the least CPU per MB (1 MiB: +25% CPU, 3x the system
# time, page faults of fresh 1 MiB buffers), and the 1 MiB pipe keeps the source busy meanwhile.
CHUNK_SIZE = 256 << 10
# A single line may be huge (100 MB records exist); beyond this it is a runaway connector.
MAX_LINE_BYTES = 512 << 20
# Lines that mention a type name without being of that type (a record whose data holds the
# text "STATE") that a block may show before the search for its other lines gives up.
LOCATE_FALSE_HITS = 32

_record_of = attrgetter("record")
_NOT_JSON = Envelope(type="")  # stands for a line that is connector log text, not a message

MessageHandler = Callable[[AirbyteMessage], None]
TextHandler = Callable[[str], None]

logger = logging.getLogger("ferry.pump")


async def complete_lines(reader: ByteReader, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Blocks of whole lines (each ending in b"\\n"); a last unterminated line gets one."""
    partial: list[bytes | memoryview] = []
    partial_size = 0
    while chunk := await reader.read(chunk_size):
        size = len(chunk)
        end = chunk.rfind(b"\n") + 1  # bytes of complete lines in this chunk
        if not end:
            partial.append(chunk)
            partial_size += size
            if partial_size > MAX_LINE_BYTES:
                raise ProtocolViolation(f"a line longer than {MAX_LINE_BYTES} bytes; giving up")
            continue
        if partial:
            # One copy: the pieces and a view of this chunk's head go into the block together.
            partial.append(chunk if end == size else memoryview(chunk)[:end])
            head = b"".join(partial)
        else:
            head = chunk if end == size else chunk[:end]
        if end == size:
            partial, partial_size = [], 0
        else:
            partial, partial_size = [chunk[end:]], size - end
        del chunk  # hold no reference while the consumer works and the next line arrives:
        yield head  # with 100 MB lines, every stale reference is 100 MB of RSS
        del head
    if partial:
        partial.append(b"\n")
        yield b"".join(partial)


def decode_block(block: bytes) -> list[Envelope] | None:
    """Envelopes of every line of a block in one call, or None if some line is not a message.

    Newlines become commas, so the block parses as one JSON array: JSON text cannot hold a raw
    newline, so each line is exactly one element unless a line is not a single message, which
    the element count catches. Replacing each newline with TWO bytes (", ") also counts the
    lines: CPython finds them with memchr for a one-to-two replace, where `bytes.count` walks
    the block byte by byte (that count was 14% of ferry's CPU).
    """
    if block.find(b"\n") == len(block) - 1:  # one line, maybe a huge one: no copies
        try:
            return [decode_envelope(block)]
        except DecodeError:
            return None
    array = b"".join((b"[", memoryview(block)[:-1], b"]"))
    commas = array.replace(b"\n", b", ")
    try:
        envelopes = decode_known_envelopes(commas)
    except DecodeError:
        return None
    return envelopes if len(envelopes) == len(commas) - len(array) + 1 else None


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


def _indices_of_none(records: list[RoutingRecord | None]) -> list[int]:
    found = []
    index = -1
    try:
        while True:
            index = records.index(None, index + 1)
            found.append(index)
    except ValueError:
        return found


def locate_lines(
    block: bytes, envelopes: list[Envelope], indices: list[int]
) -> list[tuple[int, int]] | None:
    """Byte spans (start, end without the newline) of the lines at `indices`, or None.

    `envelopes` are the block's envelopes, one per line (from `decode_block`). A line of type T
    contains the text T (unless the connector escaped it), so the block is searched for T and
    each hit's line is decoded alone: once as many lines of type T are found as the envelopes
    say there are, they are those lines, in order. None when a type name cannot be found this
    way (escaped, empty, RECORD) or too many hits are lines of another type; the caller then
    splits.
    """
    by_type: dict[str, list[int]] = {}
    for index in indices:
        by_type.setdefault(envelopes[index].type, []).append(index)
    spans: dict[int, tuple[int, int]] = {}
    for kind, wanted in by_type.items():
        needle = kind.encode()
        if kind == RECORD or not needle:  # a RECORD without its record: split instead
            return None
        found = _find_lines_of_type(block, kind, needle, len(wanted))
        if found is None:
            return None
        spans.update(zip(wanted, found, strict=True))
    return [spans[index] for index in indices]


def _find_lines_of_type(
    block: bytes, kind: str, needle: bytes, count: int
) -> list[tuple[int, int]] | None:
    found: list[tuple[int, int]] = []
    false_hits = 0
    at = block.find(needle)
    while at >= 0:
        start = block.rfind(b"\n", 0, at) + 1
        end = block.find(b"\n", at)
        try:
            matches = decode_envelope(block[start:end]).type == kind
        except DecodeError:
            matches = False
        if matches:
            found.append((start, end))
            if len(found) == count:
                return found
        else:
            false_hits += 1
            if false_hits > LOCATE_FALSE_HITS:
                return None
        at = block.find(needle, end + 1)
    return None


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
        self._unsent: dict[int, StreamStats] = {}  # streams routed since the last `sent`

    def sent(self) -> None:
        """Everything routed so far has been written to the destination."""
        for stream in self._unsent.values():
            stream.records_sent = stream.records_routed
            stream.bytes_sent = stream.bytes_routed
        self._unsent.clear()

    def route(self, block: bytes) -> bytes:
        """Bytes to forward for a block of whole lines (possibly b"")."""
        envelopes = decode_block(block)
        if envelopes is None:
            lines, envelopes = split_envelopes(block, None)
            return self._route_lines(block, lines, envelopes)
        records = list(map(_record_of, envelopes))
        first = records[0]
        if first is not None and records.count(first) == len(records):
            self._add(first, len(records), len(block))  # the common case: one stream's records
            return block
        others = _indices_of_none(records)
        spans = locate_lines(block, envelopes, others) if others else None
        if spans is None:
            lines = block.split(b"\n")
            lines.pop()
            return self._route_lines(block, lines, envelopes)
        return self._route_spans(block, envelopes, records, others, spans)

    def _route_spans(
        self,
        block: bytes,
        envelopes: list[Envelope],
        records: list[RoutingRecord | None],
        others: list[int],
        spans: list[tuple[int, int]],
    ) -> bytes:
        """Records between the other lines are counted by segment; no split into lines."""
        view = memoryview(block)
        pieces: list[bytes | memoryview] = []
        keep_from = 0
        index = offset = 0
        for other, (start, end) in zip(others, spans, strict=True):
            if index < other:
                self._count_segment(block, records[index:other], offset, start)
            line = block[start:end]
            forward = self._other(envelopes[other].type, line)
            if forward is not line:  # dropped or rewritten: the block is rebuilt around it
                pieces.append(view[keep_from:start])
                if forward is not None:
                    pieces += (forward, b"\n")
                keep_from = end + 1
            index, offset = other + 1, end + 1
        if index < len(records):
            self._count_segment(block, records[index:], offset, len(block))
        if not pieces:
            return block
        pieces.append(view[keep_from:])
        return b"".join(pieces)

    def _count_segment(
        self, block: bytes, segment: list[RoutingRecord | None], start: int, end: int
    ) -> None:
        """Count the records of block[start:end], whose lines have the envelopes `segment`."""
        first = segment[0]
        if segment.count(first) == len(segment):
            self._add(first, len(segment), end - start)  # type: ignore[arg-type]
            return
        lines = block[start:end].split(b"\n")
        lines.pop()
        self._count(lines, segment, 0, len(segment))

    def _add(self, key: RoutingRecord, count: int, size: int) -> None:
        stream = self._known.get(key) or self._resolve(key)
        stream.records_routed += count
        stream.records_since_state += count
        stream.bytes_routed += size
        self._unsent[id(stream)] = stream
        self.stats.records_since_state += count

    def _route_lines(self, block: bytes, lines: list[bytes], envelopes: list[Envelope]) -> bytes:
        """Line by line: any mix of records, other messages and text."""
        records = list(map(_record_of, envelopes))
        replaced: dict[int, bytes | None] = {}  # dropped (None) or rewritten lines
        start = 0
        while True:
            try:
                index = records.index(None, start)
            except ValueError:
                self._count(lines, records, start, len(records))
                break
            self._count(lines, records, start, index)
            line = lines[index]
            forward = self._other(envelopes[index].type, line)
            if forward is not line:
                replaced[index] = forward
            start = index + 1
        if not replaced:
            return block
        routed = (replaced.get(index, line) for index, line in enumerate(lines))
        kept = [line for line in routed if line is not None]
        return b"\n".join(kept) + b"\n" if kept else b""

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
            stream.records_routed += count
            stream.records_since_state += count
            self._unsent[id(stream)] = stream
            if len(counts) == 1:
                stream.bytes_routed += sum(lengths) + len(lengths)
            else:
                stream.bytes_routed += sum(compress(lengths, map(key.__eq__, segment))) + count
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

    def _other(self, kind: str, line: bytes) -> bytes | None:
        """Handle a non-record line; what to forward in its place (None: nothing).

        Only STATE lines reach the destination (with sourceStats filled in, as the platform's
        StateEnricher does); LOG, TRACE (the source's stream statuses included), CONTROL and
        text only go to the handlers. A RECORD line without a record (no stream to count it
        for) is forwarded as it is: the destination judges it.
        """
        if kind == STATE:
            return self._state(line)
        if kind == "":
            if line.strip():
                self.on_text(line.decode("utf-8", "replace"))
            return None
        try:
            message = decode_message(line)
        except DecodeError:
            self.on_text(line.decode("utf-8", "replace"))
            return line if kind == RECORD else None
        self.on_message(message)
        return line if kind == RECORD else None

    def _state(self, line: bytes) -> bytes:
        """Count and record a STATE; the line to forward, with `sourceStats.recordCount`."""
        state = decode_state_line(line)
        expected = state.sourceStats.recordCount if state.sourceStats else None
        streams = [self.stats.stream(d.name, d.namespace) for d in streams_touched(state)]
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
        covered = streams if state.type == STATE_STREAM else self.stats.streams.values()
        totals = {(s.name, s.namespace): (s.records_routed, s.bytes_routed) for s in covered}
        self.ledger.record_sent(state, counted, totals)
        return line if expected is not None else with_source_count(line, counted)


def with_source_count(line: bytes, count: int) -> bytes:
    """A STATE line with `sourceStats.recordCount` set; every other field kept as it came."""
    message = msgspec.json.decode(line)
    stats = message["state"].get("sourceStats")
    if not isinstance(stats, dict):
        stats = message["state"]["sourceStats"] = {}
    stats["recordCount"] = float(count)
    return msgspec.json.encode(message)


def _describe(state: AirbyteStateMessage) -> str:
    names = [d.name for d in streams_touched(state)]
    kind = state.type or "LEGACY"
    return f"{kind} {', '.join(names)}" if names else kind


async def pump(source: ByteReader, destination: ByteWriter, router: SourceRouter) -> None:
    """Move every block from the source to the destination until the source's EOF."""
    async for block in complete_lines(source):
        forward = router.route(block)
        del block
        if forward:
            await destination.write(forward)
            router.sent()
        del forward
