"""source-generator piped into the destinations, every connector a real process."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from connector_helpers import command, configured_catalog, parse_lines, run

GEN = command("source-generator")
NULL = command("destination-null")
DUCK = command("destination-duckdb")
WriteJson = Callable[[str, Any], Path]


def discover(write_json: WriteJson, config: dict[str, Any]) -> list[dict[str, Any]]:
    result = run([*GEN, "discover", "--config", str(write_json("gen.json", config))])
    streams: list[dict[str, Any]] = result.of_type("CATALOG")[0]["catalog"]["streams"]
    return streams


def pipe(
    source_argv: list[str], destination_argv: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run source | destination; return (source state messages, destination messages)."""
    source = subprocess.Popen(source_argv, stdout=subprocess.PIPE)
    tee: list[bytes] = []
    destination = subprocess.Popen(destination_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert isinstance(source.stdout, io.BufferedReader)  # read1: whatever one read returns
    assert destination.stdin is not None
    # Forward like ferry would (keeping the source's STATE lines to compare), in large blocks.
    out: list[bytes] = []

    def drain() -> None:
        assert destination.stdout is not None
        out.append(destination.stdout.read())

    reader = threading.Thread(target=drain)
    reader.start()
    rest = b""
    while block := source.stdout.read1(1 << 20):
        destination.stdin.write(block)
        rest += block
        *lines, rest = rest.split(b"\n")
        tee += [line for line in lines if line.startswith(b'{"type":"STATE"')]
    destination.stdin.close()
    reader.join()
    assert source.wait() == 0
    assert destination.wait() == 0
    states = [json.loads(line)["state"] for line in tee]
    return states, parse_lines(out[0])


def test_generator_into_null(write_json: WriteJson) -> None:
    config = {"count": 200_000, "streams": 3, "state_every": 25_000}
    catalog = write_json("catalog.json", configured_catalog(discover(write_json, config)))
    source_states, output = pipe(
        [*GEN, "read", "--config", str(write_json("gen.json", config)), "--catalog", str(catalog)],
        [*NULL, "write", "--config", str(write_json("null.json", {})), "--catalog", str(catalog)],
    )
    echoed = [m["state"] for m in output if m["type"] == "STATE"]
    assert echoed == source_states
    assert len(echoed) == 3 * 8
    [log] = [m["log"]["message"] for m in output if m["type"] == "LOG"]
    assert "600000 records, 24 states" in log


def test_generator_into_duckdb_then_resume(tmp_path: Path, write_json: WriteJson) -> None:
    config = {"count": 30_000, "streams": 2, "state_every": 4_000, "record_size": 300}
    streams = discover(write_json, config)
    catalog = write_json("catalog.json", configured_catalog(streams, "append_dedup"))
    db = tmp_path / "gen.duckdb"
    duck_argv = [
        *DUCK,
        "write",
        "--config",
        str(write_json("duck.json", {"path": str(db)})),
        "--catalog",
        str(catalog),
    ]
    gen_argv = [*GEN, "read", "--config", str(write_json("gen.json", config)), "--catalog"]
    source_states, output = pipe([*gen_argv, str(catalog)], duck_argv)
    echoed = [m["state"] for m in output if m["type"] == "STATE"]
    assert [s["stream"] for s in echoed] == [s["stream"] for s in source_states]
    for sent, back in zip(source_states, echoed, strict=True):
        assert back["destinationStats"]["recordCount"] == sent["sourceStats"]["recordCount"]
    with duckdb.connect(str(db), read_only=True) as con:
        for name in ("stream_0", "stream_1"):
            assert con.execute(f"SELECT count(*), max(id) FROM {name}").fetchall() == [
                (30_000, 30_000)
            ]
        assert con.execute("DESCRIBE stream_0").fetchall()[0][:2] == ("id", "BIGINT")

    # Resume stream_0 from an earlier state and re-send: the table stays deduplicated.
    state = write_json(
        "state.json",
        [
            {
                "type": "STREAM",
                "stream": {
                    "stream_descriptor": {"name": "stream_0"},
                    "stream_state": {"cursor": 20_000},
                },
            }
        ],
    )
    write_json("gen.json", config | {"count": 35_000})
    _, output = pipe(
        [*gen_argv, str(catalog), "--state", str(state)],
        duck_argv,
    )
    resumed = [
        m["state"]["destinationStats"]["recordCount"]
        for m in output
        if m["type"] == "STATE" and m["state"]["stream"]["stream_descriptor"]["name"] == "stream_0"
    ]
    assert sum(resumed) == 15_000  # only ids 20 001 .. 35 000 were read again
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM stream_0").fetchall() == [
            (35_000, 35_000)
        ]
        assert con.execute("SELECT count(*) FROM stream_1").fetchall() == [(35_000,)]
