"""The fast paths of SourceRouter.route give exactly what routing line by line gives."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ferry.engine.ledger import StateLedger
from ferry.engine.pump import SourceRouter, split_envelopes
from ferry.engine.stats import SyncStats
from ferry.errors import FerryError


def _record(rng: random.Random) -> bytes:
    body: dict[str, object] = {
        "stream": rng.choice("aab"),
        "data": {"id": rng.randrange(99), "p": rng.choice(["x", "STATE", "LOG", "RECORD"])},
        "emitted_at": 1,
    }
    if rng.random() < 0.05:
        body["stream"], body["namespace"] = "a", "ns"
    elif rng.random() < 0.002:
        body["stream"] = "zzz"  # not in the catalog: a ProtocolViolation, at the same line
    line = json.dumps({"type": "RECORD", "record": body}, separators=(",", ":")).encode()
    return line.replace(b'"type"', b'"\\u0074ype"') if rng.random() < 0.05 else line


def _state(rng: random.Random) -> bytes:
    stream = {"stream_descriptor": {"name": rng.choice("ab")}, "stream_state": {"c": 1}}
    line = json.dumps({"type": "STATE", "state": {"type": "STREAM", "stream": stream}}).encode()
    return line.replace(b'"STATE"', b'"\\u0053TATE"') if rng.random() < 0.1 else line


OTHERS = [
    b'{"type":"LOG","log":{"level":"INFO","message":"STATE"}}',
    b'{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":'
    b'{"stream_descriptor":{"name":"a"},"status":"RUNNING"}}}',
    b'{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":'
    b'{"stream_descriptor":{"name":"b"},"status":"COMPLETE"}}}',
    b'{"type":"TRACE","trace":{"type":"ESTIMATE","emitted_at":1.0,"estimate":'
    b'{"name":"a","type":"STREAM","row_estimate":5}}}',
    b'{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1.0,"error":{"message":"STATE"}}}',
    b"plain text STATE",
    b"",
    b"   ",
    b'{"type":"RECORD"}',
    b'{"type":"SCHEMA","x":1}',
    b'{"type":""}',
    b'{"type":"RECORD","record":{"stream":"a"',
]


def _line(rng: random.Random, mix: float) -> bytes:
    k = rng.random()
    if k < mix:
        return _record(rng)
    if k < mix + (1 - mix) / 2:
        return _state(rng)
    if rng.random() < 0.2:
        return _record(rng) + rng.choice([b"", b",", b" "]) + _record(rng)
    return rng.choice(OTHERS)


def _run(blocks: list[bytes], line_by_line: bool) -> tuple[Any, ...]:
    stats = SyncStats()
    for name, namespace in (("a", None), ("b", None), ("a", "ns")):
        stats.stream(name, namespace)
    ledger = StateLedger()
    seen: list[object] = []
    router = SourceRouter(stats, ledger, lambda m: seen.append(m.type), seen.append)
    out: list[bytes] = []
    try:
        for block in blocks:
            if line_by_line:
                lines, envelopes = split_envelopes(block)
                out.append(router._route_lines(block, lines, envelopes))
            else:
                out.append(router.route(block))
    except FerryError as error:
        out.append(str(error).encode())
    streams = {
        k: (s.records_routed, s.bytes_routed, s.states_sent) for k, s in stats.streams.items()
    }
    return out, streams, ledger.sent, seen, stats.mismatches, stats.records_since_state


@pytest.mark.parametrize("seed", range(20))
def test_fast_paths_route_like_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        mix = rng.choice([0.99, 0.9, 0.6])
        blocks = [
            b"".join(_line(rng, mix) + b"\n" for _ in range(rng.randrange(1, 60)))
            for _ in range(rng.randrange(1, 4))
        ]
        routed = _run(blocks, line_by_line=False)
        assert routed == _run(blocks, line_by_line=True)
        if not any(b'"zzz"' in b for b in blocks):  # else a ProtocolViolation cut the output
            # No STREAM_STATUS line reaches the destination (no other line says it), and every
            # STATE that does carries sourceStats (the source's states here have none).
            forwarded = b"".join(routed[0])
            assert b"STREAM_STATUS" not in forwarded
            assert forwarded.count(b'"sourceStats"') == routed[2]
