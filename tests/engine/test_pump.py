"""The data path on real bytes: routing, counting, forwarding unchanged, text lines, big lines."""

from __future__ import annotations

import asyncio
import json

import pytest

from ferry.engine.ledger import StateLedger
from ferry.engine.pump import SourceRouter, complete_lines
from ferry.engine.stats import SyncStats
from ferry.errors import ProtocolViolation
from ferry.protocol.messages import AirbyteMessage


def record(stream: str, i: int, namespace: str | None = None) -> bytes:
    body: dict[str, object] = {"stream": stream, "data": {"id": i}, "emitted_at": 1}
    if namespace:
        body["namespace"] = namespace
    return json.dumps({"type": "RECORD", "record": body}).encode()


def state(stream: str, cursor: int, count: float | None = None) -> bytes:
    message: dict[str, object] = {
        "type": "STREAM",
        "stream": {"stream_descriptor": {"name": stream}, "stream_state": {"cursor": cursor}},
    }
    if count is not None:
        message["sourceStats"] = {"recordCount": count}
    return json.dumps({"type": "STATE", "state": message}).encode()


def log(text: str) -> bytes:
    return json.dumps({"type": "LOG", "log": {"level": "INFO", "message": text}}).encode()


def trace(kind: str, **body: object) -> bytes:
    message = {"type": "TRACE", "trace": {"type": kind, "emitted_at": 1.0, **body}}
    return json.dumps(message).encode()


def stream_status(stream: str, status: str) -> bytes:
    descriptor = {"name": stream}
    return trace("STREAM_STATUS", stream_status={"stream_descriptor": descriptor, "status": status})


ESTIMATE = trace("ESTIMATE", estimate={"name": "a", "type": "STREAM", "row_estimate": 9})


class Collector:
    def __init__(self) -> None:
        self.messages: list[AirbyteMessage] = []
        self.texts: list[str] = []


def router(*streams: str) -> tuple[SourceRouter, SyncStats, StateLedger, Collector]:
    stats = SyncStats()
    for name in streams:
        stats.stream(name, None)
    ledger = StateLedger()
    seen = Collector()
    return SourceRouter(stats, ledger, seen.messages.append, seen.texts.append), stats, ledger, seen


def block(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_records_and_states_are_forwarded_as_the_original_bytes() -> None:
    route, stats, ledger, _ = router("a", "b")
    # Odd spacing and key order: forwarding must not re-serialise.
    odd = b'{ "record" : {"data": {"id": 7}, "stream": "a", "emitted_at": 1}, "type":"RECORD" }'
    data = block(record("a", 1), odd, record("b", 2), state("a", 7, 2))
    assert route.route(data) == data
    assert stats.stream("a", None).records_routed == 2
    assert stats.stream("b", None).records_routed == 1
    assert stats.stream("a", None).bytes_routed == len(record("a", 1)) + len(odd) + 2
    assert stats.stream("b", None).bytes_routed == len(record("b", 2)) + 1
    assert ledger.sent == 1
    assert stats.mismatches == []


def test_log_trace_and_text_lines_are_not_forwarded() -> None:
    route, stats, _, seen = router("a")
    data = block(
        record("a", 1), log("hello"), b"plain text from the connector", record("a", 2), b""
    )
    assert route.route(data) == block(record("a", 1), record("a", 2))
    assert [m.log.message for m in seen.messages if m.log] == ["hello"]
    assert seen.texts == ["plain text from the connector"]
    assert sum(s.records_routed for s in stats.streams.values()) == 2


def with_count(line: bytes, count: int) -> bytes:
    """A STATE line as ferry forwards it when the source left sourceStats out."""
    message = json.loads(line)
    message["state"]["sourceStats"] = {"recordCount": float(count)}
    return json.dumps(message, separators=(",", ":")).encode()


CONTROL = json.dumps(
    {"type": "CONTROL", "control": {"type": "CONNECTOR_CONFIG", "emitted_at": 1.0}}
).encode()


@pytest.mark.parametrize("text", [False, True], ids=["by-segment", "line-by-line"])
def test_only_records_and_states_reach_the_destination(text: bool) -> None:
    """As the platform: no TRACE (the source's stream statuses included), LOG or CONTROL."""
    route, stats, _, seen = router("a")
    started, complete = stream_status("a", "STARTED"), stream_status("a", "COMPLETE")
    lines = [started, record("a", 1), ESTIMATE, record("a", 2), state("a", 2, 2), complete]
    lines += [log("x"), CONTROL]
    if text:  # a text line sends the block down the line-by-line path
        lines.append(b"plain text")
    forwarded = route.route(block(*lines))
    assert forwarded == block(record("a", 1), record("a", 2), state("a", 2, 2))
    assert [m.trace.type for m in seen.messages if m.trace] == [
        "STREAM_STATUS",
        "ESTIMATE",
        "STREAM_STATUS",
    ]
    assert stats.stream("a", None).records_routed == 2


def global_state(*streams: str) -> bytes:
    states = [{"stream_descriptor": {"name": s}, "stream_state": {"c": 1}} for s in streams]
    body = {"type": "GLOBAL", "global": {"shared_state": {"x": 1}, "stream_states": states}}
    return json.dumps({"type": "STATE", "state": body, "extra": "kept"}).encode()


@pytest.mark.parametrize("text", [False, True], ids=["by-segment", "line-by-line"])
def test_states_without_source_stats_get_ferrys_count(text: bool) -> None:
    """StateEnricher's rule: a STREAM state counts its stream's records since its previous
    state, a GLOBAL one every record since the previous state (here b2 and a3; b1 is before
    the STREAM state of a); nothing else changes."""
    route, stats, ledger, _ = router("a", "b")
    first = [record("a", 1), record("b", 1), record("a", 2), state("a", 1)]
    second = [record("b", 2), record("a", 3), global_state("a", "b")]
    lines = first + second + ([b"plain text"] if text else [])
    forwarded = route.route(block(*lines))
    expected = [*first[:3], with_count(first[3], 2), *second[:2], with_count(second[2], 2)]
    assert forwarded == block(*expected)
    assert json.loads(forwarded.splitlines()[-1])["extra"] == "kept"
    assert [entry.covers_records for entry in ledger.pending] == [2, 2]
    assert stats.mismatches == []


def test_source_stats_mismatch_is_reported() -> None:
    route, stats, _, _ = router("a")
    route.route(block(record("a", 1), record("a", 2), state("a", 2, count=3)))
    assert len(stats.mismatches) == 1
    assert "source said 3" in stats.mismatches[0]
    assert "ferry counted 2" in stats.mismatches[0]


def test_record_for_a_stream_outside_the_catalog_is_a_protocol_violation() -> None:
    route, _, _, _ = router("a")
    with pytest.raises(ProtocolViolation, match="'zzz', which is not in the configured catalog"):
        route.route(block(record("zzz", 1)))


def test_namespaced_records_count_against_their_stream() -> None:
    stats = SyncStats()
    stats.stream("a", "ns")
    route = SourceRouter(stats, StateLedger(), lambda m: None, lambda t: None)
    route.route(block(record("a", 1, "ns"), record("a", 2, "ns")))
    assert stats.stream("a", "ns").records_routed == 2


class ChunkedReader:
    """A ByteReader over fixed bytes handing out at most `size` bytes per read."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.offset = data, size, 0

    async def read(self, n: int) -> bytes:
        piece = self.data[self.offset : self.offset + min(n, self.size)]
        self.offset += len(piece)
        return piece


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_lines_survive_any_chunking(size: int) -> None:
    lines = [record("a", i) for i in range(50)] + [b"x" * 3000, b"last-without-newline"]
    data = b"\n".join(lines)

    async def collect() -> bytes:
        return b"".join([b async for b in complete_lines(ChunkedReader(data, size), 4096)])

    assert asyncio.run(collect()) == data + b"\n"


def test_a_line_larger_than_many_chunks_flows() -> None:
    huge = record("a", 1).replace(b'"id": 1', b'"id": 1, "blob": "' + b"z" * (8 << 20) + b'"')

    async def collect() -> list[bytes]:
        return [b async for b in complete_lines(ChunkedReader(huge + b"\n", 1 << 16), 1 << 16)]

    blocks = asyncio.run(collect())
    assert blocks == [huge + b"\n"]
    route, stats, _, _ = router("a")
    assert route.route(blocks[0]) == blocks[0]
    assert stats.stream("a", None).bytes_routed == len(huge) + 1
