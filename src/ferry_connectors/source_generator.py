"""source-generator: a source that emits synthetic records as fast as a pipe takes them.

Config: `count` records per stream (ids 1..count), `record_size` approximate bytes per RECORD line,
`streams` (named stream_0, stream_1, ...), `state_every` (a STREAM state per stream every that many
of its records, and one at the end of each stream), `seed` (the same seed gives the same names,
scores and payloads), `fail_after` (for failure tests: once that many records of all streams have
been emitted, report a TRACE ERROR and exit 1, before any later state). Incremental streams resume
after the `cursor` of the state passed with `--state`; full_refresh streams always start at id 1.

How it stays fast: the lines of a block of 1000 consecutive ids differ only in the digits above
the thousands (and the seconds of `updated_at`, which is 2024-01-01 plus id milliseconds), so each
block is one precomputed bytes template filled by a single C-level `%` (stream, id prefix,
timestamp prefix, emitted_at), and blocks are written in ~1 MiB chunks. Nothing is serialised per
record. Measured on this project's 2-core VM: 5 million 200-byte records to /dev/null in 1.0 s of
CPU (1.4 s wall when the machine was otherwise quiet): ~3.5-5 M records/s, 0.7-1 GB/s. A 100 MB
record takes ~0.8 s (one template per record).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from ferry.errors import ConfigError
from ferry.protocol import encode
from ferry.protocol.messages import (
    CATALOG,
    FULL_REFRESH,
    INCREMENTAL,
    STATE,
    STATE_GLOBAL,
    STATE_LEGACY,
    STATE_STREAM,
    AirbyteCatalog,
    AirbyteMessage,
    AirbyteStateMessage,
    AirbyteStream,
    AirbyteStreamState,
    ConfiguredAirbyteCatalog,
    StateStats,
    StreamDescriptor,
)
from ferry_connectors import _io

PROG = "source-generator"
MAX_RECORD_SIZE = 256 * 1024 * 1024

CONNECTION_SPECIFICATION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Generator Source Spec",
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "count": {
            "title": "Records per stream",
            "description": "How many records each stream has (ids 1..count).",
            "type": "integer",
            "minimum": 0,
            "default": 1000,
            "order": 0,
        },
        "record_size": {
            "title": "Record size",
            "description": (
                "Approximate size in bytes of one RECORD line; the payload field is padded to"
                " reach it. Lines never get shorter than the fixed fields (about 190 bytes)."
            ),
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_RECORD_SIZE,
            "default": 200,
            "order": 1,
        },
        "streams": {
            "title": "Streams",
            "description": "Number of streams, named stream_0, stream_1, ...",
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "default": 1,
            "order": 2,
        },
        "state_every": {
            "title": "State every",
            "description": "Emit a STREAM state after this many records of a stream.",
            "type": "integer",
            "minimum": 1,
            "default": 10000,
            "order": 3,
        },
        "seed": {
            "title": "Seed",
            "description": "Seed of the generated values; the same seed gives the same records.",
            "type": "integer",
            "default": 0,
            "order": 4,
        },
        "fail_after": {
            "title": "Fail after",
            "description": (
                "For failure tests: once this many records (of all streams) have been emitted,"
                " report a TRACE ERROR and exit 1 without emitting any later state."
            ),
            "type": "integer",
            "minimum": 0,
            "order": 5,
        },
    },
}

STREAM_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "updated_at": {
            "type": "string",
            "format": "date-time",
            "airbyte_type": "timestamp_with_timezone",
        },
        "payload": {"type": "string"},
    },
}

BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z; updated_at = BASE + id milliseconds
BLOCK = 1000  # ids per template block on the fast path (the 3 low digits are in the template)
TEMPLATE_BUDGET = 16 * 1024 * 1024  # bytes of precomputed lines per template set
CHUNK = 1 << 20  # bytes per write to stdout

FIRST_NAMES = (
    "Ada",
    "Alan",
    "Amara",
    "Ben",
    "Carla",
    "Chen",
    "Dara",
    "Elif",
    "Emil",
    "Farah",
    "Gus",
    "Hana",
    "Ines",
    "Ivan",
    "Jonas",
    "Kai",
    "Lena",
    "Luca",
    "Maya",
    "Mina",
    "Nils",
    "Noor",
    "Omar",
    "Priya",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Vera",
    "Yuki",
    "Zoe",
)
LAST_NAMES = (
    "Abara",
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jansen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Silva",
    "Tanaka",
    "Usman",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zhang",
)
# 64 characters that need no JSON escaping and contain no '%' (the templates use %-formatting).
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
TO_ALPHABET = bytes(ALPHABET[i % 64] for i in range(256))


def stream_name(index: int) -> str:
    return f"stream_{index}"


def _seconds(epoch_seconds: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds)).encode()


def _timestamp(record_id: int) -> bytes:
    seconds, millis = divmod(record_id, 1000)
    return b"%s.%03dZ" % (_seconds(BASE_EPOCH + seconds), millis)


class Templates:
    """Precomputed record lines for ids ending in j (j < block), shared by every stream.

    `full[j]` takes (stream, id, updated_at, emitted_at); `fast[j]` (only when block == 1000)
    takes (stream, id // 1000, updated_at to the second, emitted_at) and has the last three id
    digits and the milliseconds written in.
    """

    def __init__(self, seed: int, record_size: int) -> None:
        self.block = BLOCK
        while self.block > 1 and self.block * record_size > TEMPLATE_BUDGET:
            self.block //= 10
        rng = random.Random(seed)
        fixed = len(
            b'{"type":"RECORD","record":{"stream":"stream_0","data":{"id":1000000,"name":"",'
            b'"score":00.00,"active":false,"updated_at":"2024-01-01T00:00:00.000Z","payload":""}'
            b',"emitted_at":1700000000000}}\n'
        )
        self.full: list[bytes] = []
        self.fast: list[bytes] = []
        for j in range(self.block):
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}".encode()
            score = b"%d.%02d" % (rng.randrange(100), rng.randrange(100))
            active = b"true" if rng.random() < 0.7 else b"false"
            size = max(0, record_size - fixed - len(name))
            payload = rng.randbytes(size).translate(TO_ALPHABET)
            head = b'{"type":"RECORD","record":{"stream":"%s","data":{"id":'
            middle = b',"name":"%s","score":%s,"active":%s,"updated_at":"' % (name, score, active)
            tail = b'","payload":"%s"},"emitted_at":%%s}}\n' % payload
            self.full.append(head + b"%s" + middle + b"%s" + tail)
            if self.block == BLOCK:
                digits = b"%03d" % j
                self.fast.append(head + b"%s" + digits + middle + b"%s." + digits + b"Z" + tail)
        self.fast_block = b"".join(self.fast)

    def lines(self, stream: bytes, first: int, end: int, emitted_at: bytes) -> list[bytes]:
        """The RECORD lines of ids first..end-1, as a few large byte strings."""
        parts = []
        record_id = first
        while record_id < end:
            high, j0 = divmod(record_id, self.block)
            j1 = min(self.block, j0 + end - record_id)
            n = j1 - j0
            if self.fast and high > 0:
                template = self.fast_block if n == self.block else b"".join(self.fast[j0:j1])
                prefix = b"%d" % high
                second = _seconds(BASE_EPOCH + high)
                parts.append(template % ((stream, prefix, second, emitted_at) * n))
            else:
                for j in range(j0, j1):
                    rid = high * self.block + j
                    parts.append(self.full[j] % (stream, b"%d" % rid, _timestamp(rid), emitted_at))
            record_id += n
        return parts


class ChunkWriter:
    """Collect output and write it in chunks of about CHUNK bytes."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.pending.append(data)
        self.size += len(data)
        if self.size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.out.write(self.pending[0] if len(self.pending) == 1 else b"".join(self.pending))
            self.pending.clear()
            self.size = 0
        self.out.flush()


@dataclass
class StreamRun:
    name: str
    next_id: int
    count: int
    since_state: int = 0
    states: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.count - self.next_id + 1)


def state_line(name: str, cursor: int, records: int) -> bytes:
    state = AirbyteStateMessage(
        type=STATE_STREAM,
        stream=AirbyteStreamState(
            stream_descriptor=StreamDescriptor(name=name), stream_state={"cursor": cursor}
        ),
        sourceStats=StateStats(recordCount=float(records)),
    )
    return encode(AirbyteMessage(type=STATE, state=state)) + b"\n"


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def discover_catalog(config: dict[str, Any]) -> AirbyteCatalog:
    streams = [
        AirbyteStream(
            name=stream_name(i),
            json_schema=STREAM_SCHEMA,
            supported_sync_modes=[FULL_REFRESH, INCREMENTAL],
            source_defined_cursor=True,
            default_cursor_field=["id"],
            source_defined_primary_key=[["id"]],
            is_resumable=True,
        )
        for i in range(config.get("streams", 1))
    ]
    return AirbyteCatalog(streams=streams)


def parse_state(raw: Any) -> dict[str, int]:
    """Cursors by stream name from a STREAM/GLOBAL state list or a legacy {stream: state} dict."""
    return {
        name: _cursor(name, stream_state)
        for name, stream_state in _stream_states(raw).items()
        if stream_state is not None
    }


def _stream_states(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return dict(raw)
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError("the state file must hold a list of state messages or an object")
    per_stream: dict[str, Any] = {}
    for item in raw:
        per_stream.update(_states_in_message(item))
    return per_stream


def _states_in_message(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ConfigError("the state file must hold a list of state messages")
    kind = item.get("type") or STATE_LEGACY
    if kind == STATE_STREAM:
        streams = [item.get("stream") or {}]
    elif kind == STATE_GLOBAL:
        streams = (item.get("global") or {}).get("stream_states") or []
    else:
        data = item.get("data")
        return dict(data) if isinstance(data, dict) else {}
    return {
        str((stream.get("stream_descriptor") or {}).get("name")): stream.get("stream_state")
        for stream in streams
    }


def _cursor(name: str, stream_state: Any) -> int:
    cursor = stream_state.get("cursor") if isinstance(stream_state, dict) else None
    if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
        raise ConfigError(
            f"state of stream {name!r} must be {{'cursor': <id >= 0>}}, got {stream_state!r}"
        )
    return cursor


def read(args: _io.Args) -> int:
    config = _io.load_config(args.config, CONNECTION_SPECIFICATION)
    catalog = _io.load_catalog(args.catalog)
    cursors = parse_state(_io.load_json(args.state, "state")) if args.state else {}
    record_size: int = config.get("record_size", 200)
    state_every: int = config.get("state_every", 10000)
    runs = _stream_runs(catalog, cursors, config.get("count", 1000), config.get("streams", 1))

    templates = Templates(config.get("seed", 0), record_size)
    writer = ChunkWriter(sys.stdout.buffer)
    fail_after: int | None = config.get("fail_after")
    budget = sys.maxsize if fail_after is None else fail_after  # records before failing
    # Round-robin across streams in slices of at most ~4 MiB (and never across a state).
    round_size = max(1, min(10_000, (4 << 20) // record_size))
    active = list(runs)
    while active:
        for run in list(active):
            n = min(round_size, run.remaining, state_every - run.since_state, budget)
            if n:
                stream = run.name.encode()
                for part in templates.lines(stream, run.next_id, run.next_id + n, _now_ms()):
                    writer.add(part)
                run.next_id += n
                run.since_state += n
                budget -= n
            if not budget:
                writer.flush()
                raise _io.ConnectorError(f"fail_after: failing after {fail_after} records")
            if run.since_state == state_every or run.remaining == 0:
                if run.since_state or not run.states:
                    writer.add(state_line(run.name, run.next_id - 1, run.since_state))
                    run.states += 1
                    run.since_state = 0
                if run.remaining == 0:
                    active.remove(run)
    writer.flush()
    return 0


def _stream_runs(
    catalog: ConfiguredAirbyteCatalog, cursors: dict[str, int], count: int, n_streams: int
) -> list[StreamRun]:
    """A run per configured stream, resuming an incremental one after its cursor."""
    known = {stream_name(i) for i in range(n_streams)}
    runs = []
    for configured in catalog.streams:
        name = configured.stream.name
        if name not in known:
            raise ConfigError(
                f"stream {name!r} is not one of this source's streams"
                f" (stream_0 .. stream_{n_streams - 1})"
            )
        start = cursors.get(name, 0) if configured.sync_mode == INCREMENTAL else 0
        runs.append(StreamRun(name=name, next_id=start + 1, count=count))
    return runs


def _now_ms() -> bytes:
    return b"%d" % (time.time_ns() // 1_000_000)


def handle(args: _io.Args) -> int:
    if args.command == "spec":
        _io.emit_spec(CONNECTION_SPECIFICATION, supportsIncremental=True)
        return 0
    if args.command == "check":
        return _io.emit_check(args.config, CONNECTION_SPECIFICATION)
    if args.command == "discover":
        config = _io.load_config(args.config, CONNECTION_SPECIFICATION)
        _io.emit(AirbyteMessage(type=CATALOG, catalog=discover_catalog(config)))
        return 0
    return read(args)


def main() -> None:
    sys.exit(_io.run(PROG, ("spec", "check", "discover", "read"), handle))


if __name__ == "__main__":
    main()
