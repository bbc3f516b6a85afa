"""Decoders never raise anything but DecodeError, whatever bytes a connector prints."""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.errors import DecodeError
from ferry.protocol import decode_envelope, decode_envelopes, decode_message

VALID = [
    b'{"type":"RECORD","record":{"stream":"users","namespace":"public","data":{"id":1,"n":[1.5,null,"x"]},"emitted_at":1712345678901,"meta":{"changes":[]}}}',
    b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"users"},"stream_state":{"c":"2024"}},"sourceStats":{"recordCount":10.0}}}',
    b'{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"lsn":1},"stream_states":[{"stream_descriptor":{"name":"a","namespace":"n"},"stream_state":{}}]}}}',
    b'{"type":"STATE","state":{"data":{"a":1}}}',
    b'{"type":"LOG","log":{"level":"INFO","message":"hello","stack_trace":null}}',
    b'{"type":"SPEC","spec":{"connectionSpecification":{"type":"object"},"supported_destination_sync_modes":["append"]}}',
    b'{"type":"CONNECTION_STATUS","connectionStatus":{"status":"FAILED","message":"no"}}',
    b'{"type":"CATALOG","catalog":{"streams":[{"name":"s","json_schema":{},"supported_sync_modes":["full_refresh"],"source_defined_primary_key":[["id"]]}]}}',
    b'{"type":"TRACE","trace":{"type":"ERROR","emitted_at":1.0,"error":{"message":"m","failure_type":"system_error","stream_descriptor":{"name":"s"}}}}',
    b'{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1,"stream_status":{"stream_descriptor":{"name":"s"},"status":"RUNNING","reasons":[{"type":"RATE_LIMITED","rate_limited":{"quota_reset":5}}]}}}',
    b'{"type":"TRACE","trace":{"type":"ESTIMATE","emitted_at":1,"estimate":{"name":"s","type":"STREAM","row_estimate":3}}}',
    b'{"type":"CONTROL","control":{"type":"CONNECTOR_CONFIG","emitted_at":1,"connectorConfig":{"config":{"k":"v"}}}}',
]


def decodes_or_decode_error(line: bytes | str) -> None:
    """Each decoder either returns or raises DecodeError; anything else fails the test."""
    with suppress(DecodeError):
        decode_message(line)
    with suppress(DecodeError):
        decode_envelope(line)  # type: ignore[arg-type]
    if isinstance(line, bytes):
        with suppress(DecodeError):
            decode_envelopes(b"[" + line + b"]")


def test_the_samples_are_valid() -> None:
    for line in VALID:
        decode_message(line)
        decode_envelope(line)


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(line: bytes) -> None:
    decodes_or_decode_error(line)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text(line: str) -> None:
    decodes_or_decode_error(line)
    decodes_or_decode_error(line.encode("utf-8", "surrogatepass"))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["RECORD", "STATE", "LOG", "TRACE", "STREAM", "GLOBAL", "LEGACY"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["type", "record", "state", "stream", "data", "global", "stream_states", "name"]
            )
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def dumps(value: Any) -> bytes:
    """JSON text (stdlib: integers of any size; lone surrogates come out as escapes)."""
    return json.dumps(value).encode()


@settings(max_examples=1000)
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    decodes_or_decode_error(dumps(value))


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["type", "record", "state", "log", "trace", "x"]), json_values, max_size=3
    )
)
def test_arbitrary_objects_with_message_keys(value: dict[str, Any]) -> None:
    decodes_or_decode_error(dumps(value))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*path, i))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replace(v, rest, new) if k == head else v for k, v in value.items()}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


@settings(max_examples=800)
@given(st.sampled_from(VALID), st.data())
def test_structural_mutations_of_valid_messages(line: bytes, data: st.DataObject) -> None:
    """Any part of a valid message replaced by any JSON value, or dropped."""
    original = orjson.loads(line)
    paths = _paths(original)
    path = data.draw(st.sampled_from(paths))
    if path and data.draw(st.booleans()):
        mutated = _drop(original, path)
    else:
        mutated = _replace(original, path, data.draw(json_values))
    decodes_or_decode_error(dumps(mutated))


def _drop(value: Any, path: tuple[Any, ...]) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != head}
        return [v for i, v in enumerate(value) if i != head]
    if isinstance(value, dict):
        return {k: _drop(v, rest) if k == head else v for k, v in value.items()}
    return [_drop(v, rest) if i == head else v for i, v in enumerate(value)]


@settings(max_examples=1500)
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0, 10_000),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 10_000),
)
def test_byte_mutations_of_valid_messages(
    line: bytes, edits: list[tuple[str, int, bytes]], cut: int
) -> None:
    mutated = bytearray(line)
    for kind, where, payload in edits:
        at = where % (len(mutated) + 1)
        if kind == "flip" and at < len(mutated):
            mutated[at] ^= payload[0] or 1
        elif kind == "insert":
            mutated[at:at] = payload
        elif kind == "delete":
            del mutated[at : at + len(payload)]
    decodes_or_decode_error(bytes(mutated))
    decodes_or_decode_error(line[: cut % (len(line) + 1)])  # a line cut short


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deep_nesting(depth: int) -> None:
    decodes_or_decode_error(b"[" * depth + b"]" * depth)
    decodes_or_decode_error(b'{"a":' * depth + b"1" + b"}" * depth)
    nested_data = b'{"a":' * depth + b"1" + b"}" * depth
    record = b'{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":' + nested_data + b"}}"
    decodes_or_decode_error(record)


def test_huge_numbers() -> None:
    for number in (b"1" * 400, b"1e400", b"-1e400", b"123456789012345678901234567890"):
        record = b'{"type":"RECORD","record":{"stream":"s","data":{"x":%s},"emitted_at":%s}}'
        decodes_or_decode_error(record % (number, b"1"))
        decodes_or_decode_error(record % (b"1", number))
