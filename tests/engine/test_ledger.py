"""The state ledger: an echo confirms its state and every earlier one, in source order; the
echoed counts are reconciled with what ferry sent."""

from __future__ import annotations

import pytest

from ferry.engine.ledger import StateLedger, decode_state_line
from ferry.engine.sync import Attempt, AttemptPlan
from ferry.errors import ProtocolViolation
from ferry.protocol.messages import (
    AirbyteStream,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
)
from ferry.runtimes.base import ConnectorRef, RunLabels


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


def global_state(shared: int, with_stats: str = "") -> bytes:
    streams = b'[{"stream_descriptor":{"name":"a"}},{"stream_descriptor":{"name":"b"}}]'
    body = b'{"type":"GLOBAL","global":{"shared_state":%d,"stream_states":%s}%s}' % (
        shared,
        streams,
        with_stats.encode(),
    )
    return b'{"type":"STATE","state":' + body + b"}"


def test_echoed_counts_are_reconciled_with_rejected_records_apart() -> None:
    """written + rejected must be what ferry sent (STREAM and GLOBAL states); rejected records
    are counted per stream (a GLOBAL state's across streams), never as a mismatch."""
    catalog = ConfiguredAirbyteCatalog(
        streams=[
            ConfiguredAirbyteStream(
                stream=AirbyteStream(name=name, json_schema={}, supported_sync_modes=["append"]),
                sync_mode="incremental",
                destination_sync_mode="append",
            )
            for name in ("a", "b")
        ]
    )
    ref = ConnectorRef("local", "unused")
    plan = AttemptPlan(ref, ref, b"{}", b"{}", catalog, RunLabels())
    attempt = Attempt(plan, {}, None, lambda states: None)
    attempt.ledger.record_sent(decode_state_line(stream_state("a", 1)), covers_records=10)
    attempt.ledger.record_sent(decode_state_line(global_state(1)), covers_records=7)
    attempt.ledger.record_sent(decode_state_line(stream_state("b", 1)), covers_records=5)
    stats = ',"destinationStats":{"recordCount":%s,"rejectedRecordCount":%s}'
    attempt._confirm(decode_state_line(stream_state("a", 1, stats % (8, 2))))
    attempt._confirm(decode_state_line(global_state(1, stats % (4, 3))))
    attempt._confirm(decode_state_line(stream_state("b", 1, stats % (4, 0))))
    assert attempt.stats.stream("a", None).records_rejected == 2
    assert attempt.stats.records_rejected == 5
    assert attempt.stats.mismatches == ["destination said 4 records for state #3, ferry sent 5"]
