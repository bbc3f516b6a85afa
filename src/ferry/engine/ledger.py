"""The state ledger: which source states the destination has confirmed (pure, no I/O).

Every STATE the source emits is forwarded to the destination and recorded here, in order. When
the destination echoes a state, that state and every state before it are confirmed together;
states after it stay pending. A state is identified by its content (the stream descriptor and
payload, without the stats blocks the destination may add), because destinations re-serialise.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import msgspec

from ferry.errors import ProtocolViolation
from ferry.protocol.messages import AirbyteStateMessage

_STATE_DECODER = msgspec.json.Decoder(AirbyteStateMessage)


class _StateLine(msgspec.Struct):
    state: AirbyteStateMessage


_LINE_DECODER = msgspec.json.Decoder(_StateLine)


def decode_state_line(line: bytes) -> AirbyteStateMessage:
    """The state inside a STATE message line (the line is known to be a STATE envelope)."""
    try:
        return _LINE_DECODER.decode(line).state
    except msgspec.DecodeError as e:
        raise ProtocolViolation(f"malformed STATE message ({e}): {line[:200]!r}") from None


def state_identity(state: AirbyteStateMessage) -> bytes:
    """Content of a state that survives re-serialisation: no stats, keys sorted."""
    kept = msgspec.structs.replace(state, sourceStats=None, destinationStats=None)
    return msgspec.json.encode(msgspec.to_builtins(kept), order="sorted")


@dataclass
class PendingState:
    sequence: int
    state: AirbyteStateMessage
    identity: bytes
    covers_records: int  # records ferry counted for this state, to check destinationStats
    # (name, namespace) of each stream the state covers -> records and bytes routed before it
    totals: dict[tuple[str, str | None], tuple[int, int]] = field(default_factory=dict)


@dataclass
class StateLedger:
    """Pending states in source order; `confirm` pops everything up to the echoed state."""

    pending: deque[PendingState] = field(default_factory=deque)
    sent: int = 0
    confirmed: int = 0

    def record_sent(
        self,
        state: AirbyteStateMessage,
        covers_records: int,
        totals: dict[tuple[str, str | None], tuple[int, int]] | None = None,
    ) -> PendingState:
        self.sent += 1
        entry = PendingState(self.sent, state, state_identity(state), covers_records, totals or {})
        self.pending.append(entry)
        return entry

    def confirm(self, echoed: AirbyteStateMessage) -> list[PendingState]:
        """The states now confirmed, oldest first; an echo ferry never sent is a violation."""
        identity = state_identity(echoed)
        for index, entry in enumerate(self.pending):
            if entry.identity == identity:
                confirmed = [self.pending.popleft() for _ in range(index + 1)]
                self.confirmed += len(confirmed)
                return confirmed
        raise ProtocolViolation(
            "the destination echoed a state that ferry has not sent it (or already confirmed): "
            f"{identity[:200]!r}"
        )

    @property
    def unconfirmed(self) -> int:
        return len(self.pending)
