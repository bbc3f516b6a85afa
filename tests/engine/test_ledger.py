"""The state ledger: an echo confirms its state and every earlier one, in source order."""

from __future__ import annotations

import pytest

from ferry.engine.ledger import StateLedger, decode_state_line
from ferry.errors import ProtocolViolation


def stream_state(name: str, cursor: int, extra: str = "") -> bytes:
    return (
        b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"'
        + name.encode()
        + b'"},"stream_state":{"cursor":'
        + str(cursor).encode()
        + b"}}"
        + extra.encode()
        + b"}}"
    )


def test_echo_confirms_that_state_and_all_before_it() -> None:
    ledger = StateLedger()
    for cursor in (1, 2, 3):
        ledger.record_sent(decode_state_line(stream_state("a", cursor)), covers_records=10)
    confirmed = ledger.confirm(decode_state_line(stream_state("a", 2)))
    assert [c.sequence for c in confirmed] == [1, 2]
    assert ledger.unconfirmed == 1
    assert ledger.confirmed == 2


def test_echo_with_stats_added_still_matches() -> None:
    ledger = StateLedger()
    ledger.record_sent(
        decode_state_line(stream_state("a", 1, ',"sourceStats":{"recordCount":5}')), 5
    )
    echoed = decode_state_line(stream_state("a", 1, ',"destinationStats":{"recordCount":5}'))
    assert [c.sequence for c in ledger.confirm(echoed)] == [1]


def test_echo_of_a_state_never_sent_is_a_violation() -> None:
    ledger = StateLedger()
    ledger.record_sent(decode_state_line(stream_state("a", 1)), 0)
    with pytest.raises(ProtocolViolation, match="has not sent"):
        ledger.confirm(decode_state_line(stream_state("a", 99)))
    assert ledger.unconfirmed == 1


def test_repeated_identical_states_are_confirmed_one_by_one() -> None:
    ledger = StateLedger()
    for _ in range(2):
        ledger.record_sent(decode_state_line(stream_state("a", 1)), 0)
    assert len(ledger.confirm(decode_state_line(stream_state("a", 1)))) == 1
    assert len(ledger.confirm(decode_state_line(stream_state("a", 1)))) == 1
    assert ledger.unconfirmed == 0
