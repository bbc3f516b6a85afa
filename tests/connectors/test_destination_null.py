"""destination-null, run as a real process (and its line counting fed through a real pipe)."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from connector_helpers import Result, command, module_command, run
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry_connectors.destination_null import READ_SIZE, Sink, consume

NULL = command("destination-null")
WriteJson = Callable[[str, Any], Path]


def record(i: int, stream: str = "s", pad: int = 0, spaced: bool = False) -> bytes:
    message = {
        "type": "RECORD",
        "record": {"stream": stream, "data": {"id": i, "pad": "x" * pad}, "emitted_at": 1},
    }
    if spaced:
        return json.dumps(message).encode() + b"\n"
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def state(n: int) -> bytes:
    message = {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": "s"}, "stream_state": {"n": n}},
        },
    }
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def write(write_json: WriteJson, data: bytes, config: dict[str, Any] | None = None) -> Result:
    argv = [
        *NULL,
        "write",
        "--config",
        str(write_json("config.json", config or {})),
        "--catalog",
        str(write_json("catalog.json", {"streams": []})),
    ]
    return run(argv, stdin=data)


def total(result: Result) -> str:
    [log] = [m["log"]["message"] for m in result.of_type("LOG")]
    return str(log)


def test_spec_documents_the_failure_options() -> None:
    for argv in (NULL, module_command("destination-null")):
        result = run([*argv, "spec"])
        assert result.returncode == 0
        spec = result.messages[0]["spec"]
        jsonschema.Draft7Validator.check_schema(spec["connectionSpecification"])
        assert {"fail_after", "never_echo"} <= set(spec["connectionSpecification"]["properties"])
        assert "append" in spec["supported_destination_sync_modes"]


def test_check(write_json: WriteJson) -> None:
    ok = run([*NULL, "check", "--config", str(write_json("ok.json", {}))])
    assert ok.status()["status"] == "SUCCEEDED"
    bad = run([*NULL, "check", "--config", str(write_json("bad.json", {"fail_after": -1}))])
    assert (bad.returncode, bad.status()["status"]) == (0, "FAILED")


def test_counts_records_and_echoes_states_unchanged_in_order(write_json: WriteJson) -> None:
    states = [state(n) for n in range(5)]
    data = b""
    for n in range(5):
        data += b"".join(record(i) for i in range(n * 1000, (n + 1) * 1000)) + states[n]
    data += b"".join(record(i) for i in range(77))
    result = write(write_json, data)
    assert result.returncode == 0, result.stderr
    echoed = [line + b"\n" for line in result.stdout.splitlines() if b'"STATE"' in line]
    assert echoed == states
    assert "5077 records, 5 states" in total(result)


def test_other_lines_spaced_json_and_records_that_look_like_states(write_json: WriteJson) -> None:
    tricky = {
        "type": "RECORD",
        "record": {
            "stream": "s",
            "data": {"type": "STATE", "note": '{"type":"RECORD",', "x": "\n"},
            "emitted_at": 1,
        },
    }
    lines = [
        record(1),
        b'{"type":"LOG","log":{"level":"INFO","message":"{\\"type\\":\\"RECORD\\","}}\n',
        record(2, spaced=True),
        b"\n",
        b"   \n",
        b"this is not json\n",
        json.dumps(tricky).encode() + b"\n",
        state(1),
        b'{"record":{"stream":"s","data":{},"emitted_at":1},"type":"RECORD"}\n',
        record(3),
        state(2),
    ]
    result = write(write_json, b"".join(lines))
    assert result.returncode == 0
    assert [s["stream"]["stream_state"]["n"] for s in result.states] == [1, 2]
    assert "5 records, 2 states" in total(result)
    assert "2 other lines ignored" in total(result)


def test_stream_status_traces_are_read_and_ignored(write_json: WriteJson) -> None:
    def status(value: str) -> bytes:
        stream_status = {"stream_descriptor": {"name": "s"}, "status": value}
        trace = {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": stream_status}
        return json.dumps({"type": "TRACE", "trace": trace}).encode() + b"\n"

    data = status("STARTED") + record(1) + state(1) + record(2) + status("COMPLETE") + state(2)
    result = write(write_json, data)
    assert result.returncode == 0
    assert [s["stream"]["stream_state"]["n"] for s in result.states] == [1, 2]
    assert "2 records, 2 states" in total(result)


def test_a_spaced_source_is_counted_on_the_fast_path_too(write_json: WriteJson) -> None:
    data = b"".join(record(i, spaced=True) for i in range(20000)) + state(1)
    result = write(write_json, data)
    assert "20000 records, 1 states" in total(result)
    assert len(result.states) == 1


def test_huge_records_across_reads_and_no_final_newline(write_json: WriteJson) -> None:
    big = record(1, pad=3 * READ_SIZE)
    data = state(0) + big + state(1) + big + record(2) + state(2) + record(3).rstrip(b"\n")
    result = write(write_json, data)
    assert result.returncode == 0
    assert [s["stream"]["stream_state"]["n"] for s in result.states] == [0, 1, 2]
    assert "4 records, 3 states" in total(result)


def test_fail_after_stops_before_the_states_that_follow(write_json: WriteJson) -> None:
    data = b""
    for n in range(4):
        data += b"".join(record(i) for i in range(100)) + state(n)
    result = write(write_json, data, {"fail_after": 250})
    assert result.returncode == 1
    assert [s["stream"]["stream_state"]["n"] for s in result.states] == [0, 1]
    [error] = result.errors
    assert "250" in error["message"]

    exactly = write(write_json, data, {"fail_after": 200})
    assert exactly.returncode == 1
    # the 200th record is the last one before state 1: state 1 came after it, never echoed
    assert [s["stream"]["stream_state"]["n"] for s in exactly.states] == [0]

    at_once = write(write_json, data, {"fail_after": 0})
    assert at_once.returncode == 1
    assert at_once.states == []

    never = write(write_json, data, {"fail_after": 10_000})
    assert never.returncode == 0
    assert len(never.states) == 4


def test_never_echo(write_json: WriteJson) -> None:
    data = b"".join(record(i) for i in range(10)) + state(1)
    result = write(write_json, data, {"never_echo": True})
    assert result.returncode == 0
    assert result.states == []
    assert "10 records, 1 states" in total(result)


def test_bad_config_is_a_config_error(write_json: WriteJson) -> None:
    result = write(write_json, b"", {"never_echo": "sometimes"})
    assert result.returncode == 1
    assert result.errors[0]["failure_type"] == "config_error"


lines_strategy = st.lists(
    st.one_of(
        st.builds(lambda i, pad: record(i, pad=pad), st.integers(0, 10**6), st.integers(0, 3000)),
        st.builds(lambda i: record(i, spaced=True), st.integers(0, 100)),
        st.builds(state, st.integers(0, 10**6)),
        st.just(b'{"type":"LOG","log":{"level":"INFO","message":"hi"}}\n'),
        st.just(b"\n"),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(lines=lines_strategy, cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=50))
def test_counts_do_not_depend_on_how_the_pipe_splits_the_input(
    lines: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(lines)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        position, turn = 0, 0
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            while position < len(data):
                size = cuts[turn % len(cuts)]
                pipe.write(data[position : position + size])
                position += size
                turn += 1

    writer = threading.Thread(target=feed)
    writer.start()
    sink = Sink(fail_after=None, echo=True)
    out = io.BytesIO()
    try:
        consume(read_fd, sink, out)
    finally:
        writer.join()
        os.close(read_fd)
    records = sum(1 for line in lines if b'"RECORD"' in line)
    states = [line for line in lines if line.startswith(b'{"type":"STATE"')]
    assert sink.records == records
    assert out.getvalue() == b"".join(states)
