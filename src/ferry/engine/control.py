"""The control stream of the single-pod layout: what the in-pod pump tells the launching ferry.

In the single-pod layout the records go from the source to the destination inside the pod; only
this stream leaves it, as JSON lines over ferry's relay port (the pump container's `stdout`
channel). Each line is one event:

    {"event": "state", "counted": N, "state": {...}}    a STATE the pump sent to the destination,
                                                          N records counted since the previous one
    {"event": "echo", "state": {...}}                     a STATE the destination echoed
    {"event": "message", "role": R, "message": {...}}     a LOG/TRACE/CONTROL message of R
    {"event": "text", "role": R, "text": "..."}           a line of R's stderr or non-JSON output
    {"event": "stats", "streams": [...], ...}             the pump's counters (records, bytes...)
    {"event": "error", "role": R, "kind": K, ...}         why R failed, as the pump saw it
    {"event": "end", "cancelled": B}                      the attempt in the pod is over

States are sent on this stream before the destination gets them, so every echo follows its
state: the launching ferry's ledger records sent states in order and commits on echoes, exactly
as in the other layouts. The launching ferry sends commands the other way (the `stdin` channel):
`{"command": "stop"}` asks the pump to stop the source (a second one stops the destination).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import msgspec

from ferry import errors
from ferry.engine.stats import StreamStats, SyncStats
from ferry.errors import ConnectorCrashed, FerryError, ProtocolViolation
from ferry.protocol.messages import AirbyteStateMessage
from ferry.runtimes.base import Role

STOP_COMMAND = b'{"command": "stop"}\n'
# Counters the launching ferry keeps itself (from echoes and messages), not from the pump.
_OWN_FIELDS = {
    "name",
    "namespace",
    "states_committed",
    "records_committed",
    "bytes_committed",
    "records_rejected",
    "status",
}


class Event(msgspec.Struct, omit_defaults=True):
    event: str
    role: str | None = None
    counted: int | None = None
    totals: list[tuple[str, str | None, int, int]] | None = None  # per stream: records, bytes
    state: msgspec.Raw = msgspec.Raw()
    message: msgspec.Raw = msgspec.Raw()
    text: str | None = None
    streams: list[dict[str, Any]] | None = None
    mismatches: list[str] | None = None
    kind: str | None = None
    exit_code: int | None = None
    failure_type: str | None = None
    cancelled: bool | None = None


_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(AirbyteStateMessage)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event) + b"\n"


def decode_event(line: bytes) -> Event:
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as e:
        raise ProtocolViolation(
            f"malformed control event from the pod ({e}): {line[:200]!r}"
        ) from None


def decode_state(raw: msgspec.Raw) -> AirbyteStateMessage:
    if not raw:
        raise ProtocolViolation("a state event without its state")
    return _state_decoder.decode(raw)


Totals = dict[tuple[str, str | None], tuple[int, int]]


def state_event(
    kind: str, state: bytes, counted: int | None = None, totals: Totals | None = None
) -> Event:
    """`kind` "state" (sent to the destination, with the records it covers and the streams'
    running totals) or "echo" (echoed by it); `state` is its JSON."""
    rows = [(n, ns, r, b) for (n, ns), (r, b) in totals.items()] if totals else None
    return Event(kind, counted=counted, totals=rows, state=msgspec.Raw(state))


def totals_of(event: Event) -> Totals:
    return {
        (name, namespace): (records, size) for name, namespace, records, size in event.totals or ()
    }


def stats_event(stats: SyncStats) -> Event:
    streams = [dataclasses.asdict(stream) for stream in stats.streams.values()]
    return Event("stats", streams=streams, mismatches=list(stats.mismatches))


def apply_stats(event: Event, stats: SyncStats) -> None:
    """Take the pump's counters into `stats`, keeping what the launching ferry counts itself."""
    known = {f.name for f in dataclasses.fields(StreamStats)} - _OWN_FIELDS
    for values in event.streams or ():
        stream = stats.stream(values["name"], values.get("namespace"))
        for name, value in values.items():
            if name in known:
                setattr(stream, name, value)
    for mismatch in event.mismatches or ():
        if mismatch not in stats.mismatches:
            stats.mismatches.append(mismatch)


def error_events(failures: Sequence[tuple[Role, FerryError]]) -> list[Event]:
    return [
        Event(
            "error",
            role=role,
            kind=type(error).__name__,
            text=str(error),
            exit_code=getattr(error, "process_exit_code", None),
            failure_type=getattr(error, "failure_type", None),
        )
        for role, error in failures
    ]


def error_of(event: Event) -> FerryError:
    """The FerryError an error event describes (of the same class when ferry knows it)."""
    kind = getattr(errors, event.kind or "", None)
    message = event.text or "no message"
    if kind is errors.ConnectorFailed:
        return errors.ConnectorFailed(message, failure_type=event.failure_type)
    if kind is ConnectorCrashed or not (isinstance(kind, type) and issubclass(kind, FerryError)):
        return ConnectorCrashed(message, exit_code=event.exit_code)
    error: FerryError = kind(message)
    return error
