"""A connection's state and how state messages change it (pure: no I/O).

A connection holds one of the three Airbyte state shapes:

- STREAM: one blob per stream descriptor (name, namespace). A STREAM message replaces the blob of
  its stream and leaves the other streams alone.
- GLOBAL: a shared blob (e.g. a CDC position) plus per-stream blobs. A GLOBAL message carries the
  whole global state, so it replaces the shared blob and every per-stream blob.
- LEGACY: one opaque data blob for the whole connection, replaced by each LEGACY message.

A message of another shape than the stored one replaces the stored state entirely (a source that
moved from LEGACY to per-stream state, say). Values are never inspected here, so a store may keep
them in whatever form it likes (the SQLite store keeps them as undecoded JSON text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.errors import ConfigError, ProtocolViolation
from ferry.protocol import encode
from ferry.protocol.messages import (
    STATE_GLOBAL,
    STATE_LEGACY,
    STATE_STREAM,
    AirbyteGlobalState,
    AirbyteStateMessage,
    AirbyteStreamState,
    StreamDescriptor,
)

STATE_TYPES = frozenset({STATE_STREAM, STATE_GLOBAL, STATE_LEGACY})


def _order(descriptor: StreamDescriptor) -> tuple[bool, str, str]:
    return (descriptor.namespace is not None, descriptor.namespace or "", descriptor.name)


@dataclass(frozen=True)
class ConnectionState:
    """The committed state of one connection; `type` is None while there is none."""

    type: str | None = None
    streams: Mapping[StreamDescriptor, Any] = field(default_factory=dict)
    shared_state: Any = None  # GLOBAL only
    data: Any = None  # LEGACY only

    @property
    def is_empty(self) -> bool:
        return self.type is None

    def stream_descriptors(self) -> list[StreamDescriptor]:
        """The streams holding a state, namespaced ones after the others, then by name."""
        return sorted(self.streams, key=_order)

    def to_messages(self) -> list[AirbyteStateMessage]:
        """The state as the messages a source is given back: one per stream, one GLOBAL, or one
        LEGACY message; none when empty."""
        if self.type == STATE_STREAM:
            return [
                AirbyteStateMessage(
                    type=STATE_STREAM,
                    stream=AirbyteStreamState(stream_descriptor=d, stream_state=self.streams[d]),
                )
                for d in self.stream_descriptors()
            ]
        if self.type == STATE_GLOBAL:
            stream_states = [
                AirbyteStreamState(stream_descriptor=d, stream_state=self.streams[d])
                for d in self.stream_descriptors()
            ]
            global_ = AirbyteGlobalState(
                stream_states=stream_states, shared_state=self.shared_state
            )
            return [AirbyteStateMessage(type=STATE_GLOBAL, global_=global_)]
        if self.type == STATE_LEGACY:
            return [AirbyteStateMessage(type=STATE_LEGACY, data=self.data)]
        return []

    def state_file(self) -> bytes | None:
        """Contents of the `--state` file for `read`, or None: then pass no `--state` at all.

        A JSON array of AirbyteStateMessage for STREAM and GLOBAL state; the bare data object
        for LEGACY state (what sources of that era read).
        """
        if self.type is None:
            return None
        if self.type == STATE_LEGACY:
            return encode(self.data)
        return encode(self.to_messages())


EMPTY = ConnectionState()


def _kind(message: AirbyteStateMessage) -> str:
    kind = message.type or STATE_LEGACY
    if kind not in STATE_TYPES:
        raise ProtocolViolation(
            f"state message of unknown type {kind!r}; ferry stores STREAM, GLOBAL and LEGACY state"
        )
    return kind


def apply_states(
    state: ConnectionState, messages: Iterable[AirbyteStateMessage]
) -> ConnectionState:
    """`state` after applying `messages` in order; `state` itself is left unchanged.

    Raises ProtocolViolation for a message of unknown type or missing its payload, before
    anything is applied (the caller's transaction then changes nothing).
    """
    kind = state.type
    streams: dict[StreamDescriptor, Any] = dict(state.streams)
    shared_state = state.shared_state
    data = state.data
    for message in messages:
        new_kind = _kind(message)
        if new_kind == STATE_STREAM:
            if message.stream is None:
                raise ProtocolViolation("a STREAM state message without its `stream` object")
            if kind != STATE_STREAM:
                streams, shared_state, data = {}, None, None
            streams[message.stream.stream_descriptor] = message.stream.stream_state
        elif new_kind == STATE_GLOBAL:
            if message.global_ is None:
                raise ProtocolViolation("a GLOBAL state message without its `global` object")
            streams = {s.stream_descriptor: s.stream_state for s in message.global_.stream_states}
            shared_state, data = message.global_.shared_state, None
        else:
            if message.data is None:
                raise ProtocolViolation("a LEGACY state message without `data`")
            streams, shared_state, data = {}, None, message.data
        kind = new_kind
    return ConnectionState(type=kind, streams=streams, shared_state=shared_state, data=data)


@dataclass(frozen=True)
class StateUpdate:
    """What a batch of state messages does to a stored state, whatever that state is.

    `state` is the batch applied to no state. Applied to a stored state S, the batch gives
    `state` itself, except when `merges` and S is a STREAM state: then S's streams the batch
    does not name are kept (STREAM messages replace their own stream only). A store can thus
    write a batch without reading what it holds first.
    """

    state: ConnectionState
    merges: bool


def state_update(messages: Iterable[AirbyteStateMessage]) -> StateUpdate:
    """The update `messages` make (ProtocolViolation as `apply_states` raises it)."""
    messages = list(messages)
    state = apply_states(EMPTY, messages)
    return StateUpdate(state, merges=all(_kind(m) == STATE_STREAM for m in messages))


def apply_state(state: ConnectionState, message: AirbyteStateMessage) -> ConnectionState:
    return apply_states(state, (message,))


def without_stream(state: ConnectionState, stream: StreamDescriptor) -> ConnectionState:
    """`state` with the state of one stream removed (a GLOBAL state keeps its shared blob).

    LEGACY state is one blob for every stream: it cannot lose one stream (ConfigError).
    """
    if state.type == STATE_LEGACY:
        raise ConfigError(
            "this connection's state is LEGACY: one blob for all streams, which cannot be reset "
            "for one stream; reset the whole connection's state instead"
        )
    return keeping_streams(state, lambda descriptor: descriptor != stream)


def keeping_streams(
    state: ConnectionState, keep: Callable[[StreamDescriptor], bool]
) -> ConnectionState:
    """`state` with only the per-stream states `keep` accepts (a GLOBAL state keeps its shared
    blob). LEGACY state is one blob for every stream and comes back whole."""
    if state.type not in (STATE_STREAM, STATE_GLOBAL):
        return state
    streams = {d: v for d, v in state.streams.items() if keep(d)}
    if len(streams) == len(state.streams):
        return state
    if state.type == STATE_STREAM and not streams:
        return EMPTY
    return ConnectionState(type=state.type, streams=streams, shared_state=state.shared_state)


def streams_touched(message: AirbyteStateMessage) -> list[StreamDescriptor]:
    """The streams a state message speaks for (none for LEGACY)."""
    if message.type == STATE_STREAM and message.stream is not None:
        return [message.stream.stream_descriptor]
    if message.type == STATE_GLOBAL and message.global_ is not None:
        return [s.stream_descriptor for s in message.global_.stream_states]
    return []
