"""The pure state-merge rules, without any database."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ferry.errors import ConfigError, ProtocolViolation
from ferry.protocol import decode_message
from ferry.protocol.messages import AirbyteStateMessage, StreamDescriptor
from ferry.store.state import (
    EMPTY,
    ConnectionState,
    StateUpdate,
    apply_state,
    apply_states,
    keeping_streams,
    state_update,
    streams_touched,
    without_stream,
)

A = StreamDescriptor("a")
B = StreamDescriptor("b")
B_NS = StreamDescriptor("b", "public")


def state(body: dict[str, Any]) -> AirbyteStateMessage:
    message = decode_message(orjson.dumps({"type": "STATE", "state": body}))
    assert message.state is not None
    return message.state


def stream(name: str, value: Any, namespace: str | None = None) -> AirbyteStateMessage:
    descriptor: dict[str, Any] = {"name": name}
    if namespace is not None:
        descriptor["namespace"] = namespace
    return state(
        {"type": "STREAM", "stream": {"stream_descriptor": descriptor, "stream_state": value}}
    )


def global_(shared: Any, streams: dict[str, Any]) -> AirbyteStateMessage:
    return state(
        {
            "type": "GLOBAL",
            "global": {
                "shared_state": shared,
                "stream_states": [
                    {"stream_descriptor": {"name": n}, "stream_state": v}
                    for n, v in streams.items()
                ],
            },
        }
    )


def legacy(data: Any) -> AirbyteStateMessage:
    return state({"type": "LEGACY", "data": data})


def test_empty_state_has_no_messages_and_no_state_file() -> None:
    assert EMPTY.is_empty
    assert EMPTY.to_messages() == []
    assert EMPTY.state_file() is None


def test_stream_states_replace_per_stream_and_keep_the_others() -> None:
    result = apply_states(
        EMPTY,
        [
            stream("a", {"c": 1}),
            stream("b", {"c": 5}),
            stream("a", {"c": 2}),
            stream("b", 7, "public"),
        ],
    )
    assert result.type == "STREAM"
    assert dict(result.streams) == {A: {"c": 2}, B: {"c": 5}, B_NS: 7}
    later = apply_state(result, stream("b", {"c": 6}))
    assert dict(later.streams) == {A: {"c": 2}, B: {"c": 6}, B_NS: 7}
    assert dict(result.streams)[B] == {"c": 5}, "the input state is not modified"


def test_namespace_none_and_empty_are_different_streams() -> None:
    result = apply_states(EMPTY, [stream("a", 1), stream("a", 2, "")])
    assert dict(result.streams) == {A: 1, StreamDescriptor("a", ""): 2}


def test_stream_state_file_is_a_json_array_of_state_messages() -> None:
    result = apply_states(EMPTY, [stream("b", {"c": 5}, "public"), stream("a", {"c": 2})])
    file = result.state_file()
    assert file is not None
    assert orjson.loads(file) == [
        {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": "a"}, "stream_state": {"c": 2}},
        },
        {
            "type": "STREAM",
            "stream": {
                "stream_descriptor": {"name": "b", "namespace": "public"},
                "stream_state": {"c": 5},
            },
        },
    ]


def test_global_replaces_shared_and_every_stream() -> None:
    first = apply_state(EMPTY, global_({"lsn": 1}, {"a": {"c": 1}, "b": {"c": 1}}))
    second = apply_state(first, global_({"lsn": 2}, {"a": {"c": 2}}))
    assert second.type == "GLOBAL"
    assert second.shared_state == {"lsn": 2}
    assert dict(second.streams) == {A: {"c": 2}}
    file = second.state_file()
    assert file is not None
    assert orjson.loads(file) == [
        {
            "type": "GLOBAL",
            "global": {
                "shared_state": {"lsn": 2},
                "stream_states": [{"stream_descriptor": {"name": "a"}, "stream_state": {"c": 2}}],
            },
        }
    ]


def test_legacy_replaces_data_and_its_state_file_is_the_bare_object() -> None:
    result = apply_states(EMPTY, [legacy({"a": 1}), legacy({"b": 2})])
    assert result.type == "LEGACY"
    assert result.data == {"b": 2}
    assert result.state_file() == b'{"b":2}'
    assert [m.data for m in result.to_messages()] == [{"b": 2}]


def test_a_state_without_type_is_legacy() -> None:
    result = apply_state(EMPTY, state({"data": {"x": 1}}))
    assert result.type == "LEGACY"
    assert result.data == {"x": 1}
    assert apply_state(EMPTY, state({"type": None, "data": {"x": 2}})).data == {"x": 2}


@pytest.mark.parametrize(
    "switch",
    [
        [stream("a", 1), global_({"g": 1}, {"b": 2})],
        [global_({"g": 1}, {"b": 2}), stream("a", 1)],
        [legacy({"x": 1}), stream("a", 1)],
        [stream("a", 1), legacy({"x": 1})],
        [global_({"g": 1}, {"b": 2}), legacy({"x": 1})],
    ],
)
def test_a_message_of_another_shape_replaces_the_whole_state(
    switch: list[AirbyteStateMessage],
) -> None:
    result = apply_states(EMPTY, switch)
    alone = apply_state(EMPTY, switch[-1])
    assert result == alone


def test_a_batch_equals_the_messages_applied_one_by_one() -> None:
    batch = [stream("a", 1), stream("b", 2), global_({"g": 1}, {"a": 3}), legacy(4), stream("a", 5)]
    one_by_one = EMPTY
    for message in batch:
        one_by_one = apply_state(one_by_one, message)
    assert apply_states(EMPTY, batch) == one_by_one


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "STREAM"},
        {"type": "GLOBAL"},
        {"type": "LEGACY"},
        {"type": "PER_PARTITION", "data": {"x": 1}},
    ],
)
def test_unusable_messages_are_protocol_violations_and_nothing_is_applied(
    bad: dict[str, Any],
) -> None:
    good = apply_state(EMPTY, stream("a", 1))
    with pytest.raises(ProtocolViolation):
        apply_states(good, [stream("a", 2), state(bad)])
    assert dict(good.streams) == {A: 1}


def test_a_null_stream_state_is_kept_as_null() -> None:
    result = apply_state(EMPTY, stream("a", None))
    assert dict(result.streams) == {A: None}
    file = result.state_file()
    assert file is not None
    assert orjson.loads(file) == [
        {"type": "STREAM", "stream": {"stream_descriptor": {"name": "a"}}}
    ]


def test_without_stream_on_stream_state() -> None:
    both = apply_states(EMPTY, [stream("a", 1), stream("b", 2)])
    assert dict(without_stream(both, A).streams) == {B: 2}
    assert without_stream(without_stream(both, A), B) == EMPTY
    assert without_stream(both, StreamDescriptor("zzz")) is both


def test_without_stream_on_global_state_keeps_the_shared_state() -> None:
    result = without_stream(apply_state(EMPTY, global_({"lsn": 9}, {"a": 1, "b": 2})), A)
    assert result.type == "GLOBAL"
    assert result.shared_state == {"lsn": 9}
    assert dict(result.streams) == {B: 2}


def test_without_stream_on_legacy_state_is_refused() -> None:
    with pytest.raises(ConfigError, match="LEGACY"):
        without_stream(apply_state(EMPTY, legacy({"x": 1})), A)


def test_without_stream_on_empty_state_is_a_no_op() -> None:
    assert without_stream(EMPTY, A) is EMPTY


def test_streams_touched() -> None:
    assert streams_touched(stream("a", 1)) == [A]
    assert streams_touched(global_(None, {"a": 1, "b": 2})) == [A, B]
    assert streams_touched(legacy({})) == []


def test_connection_state_messages_round_trip_through_apply() -> None:
    original = apply_states(EMPTY, [stream("a", {"c": 1}), stream("b", [1, 2], "ns")])
    assert apply_states(EMPTY, original.to_messages()) == original
    shared = apply_state(EMPTY, global_({"lsn": 1}, {"a": 1}))
    assert apply_states(EMPTY, shared.to_messages()) == shared
    assert isinstance(shared, ConnectionState)


@pytest.mark.parametrize(
    "messages",
    [
        [stream("a", {"c": 1}), stream("b", {"c": 2}, "ns"), stream("n", None)],
        [global_({"lsn": 5}, {"a": {"c": 1}, "b": {}})],
    ],
    ids=["stream", "global"],
)
def test_the_state_file_is_valid_for_the_official_models(
    messages: list[AirbyteStateMessage],
) -> None:
    from airbyte_protocol.models import AirbyteStateMessage as Official

    file = apply_states(EMPTY, messages).state_file()
    assert file is not None
    parsed = [Official.model_validate(item) for item in orjson.loads(file)]
    assert {m.type.value for m in parsed if m.type is not None} == {messages[0].type}
    assert len(parsed) == (len(messages) if messages[0].type == "STREAM" else 1)


def test_keeping_streams_filters_stream_and_global_state_but_not_legacy() -> None:
    both = apply_states(EMPTY, [stream("a", 1), stream("b", 2)])
    assert dict(keeping_streams(both, lambda d: d == B).streams) == {B: 2}
    assert keeping_streams(both, lambda d: False) == EMPTY
    assert keeping_streams(both, lambda d: True) is both
    cdc = keeping_streams(
        apply_state(EMPTY, global_({"lsn": 9}, {"a": 1, "b": 2})), lambda d: False
    )
    assert (cdc.type, cdc.shared_state, dict(cdc.streams)) == ("GLOBAL", {"lsn": 9}, {})
    old = apply_state(EMPTY, legacy({"x": 1}))
    assert keeping_streams(old, lambda d: False) is old  # one blob: nothing to pick from


def applied(update: StateUpdate, stored: ConnectionState) -> ConnectionState:
    """What a store holds after writing `update` over `stored` (the rule StateUpdate states)."""
    if update.merges and stored.type == "STREAM":
        return ConnectionState("STREAM", {**stored.streams, **update.state.streams})
    return update.state


def test_a_state_update_written_over_any_stored_state_equals_applying_the_messages() -> None:
    messages = [
        stream("a", 1),
        stream("b", 2),
        stream("b", 3, "public"),
        global_({"lsn": 4}, {"a": 5}),
        global_({"lsn": 6}, {}),
        legacy({"x": 7}),
    ]
    stored_states = [EMPTY, *(apply_state(EMPTY, m) for m in messages)]
    stored_states.append(apply_states(EMPTY, messages[:3]))
    batches = [[m] for m in messages] + [
        [a, b] for a in messages for b in messages
    ]  # every pair, in both orders
    for stored in stored_states:
        for batch in batches:
            assert applied(state_update(batch), stored) == apply_states(stored, batch), batch


def test_a_state_update_refuses_what_apply_states_refuses() -> None:
    with pytest.raises(ProtocolViolation):
        state_update([stream("a", 1), state({"type": "STREAM"})])
