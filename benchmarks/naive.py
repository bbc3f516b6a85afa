"""The reference orchestrator: what a careful engineer writes in an afternoon.

    naive.py --source EXE --destination EXE --source-config F --destination-config F
             --catalog F [--state-file F]

Starts `EXE write` and `EXE read` as plain subprocesses, reads the source's stdout line by line,
decodes every line with orjson, counts records per stream, writes RECORD and STATE lines to the
destination unchanged (1 MiB buffered pipes), sends LOG/TRACE/text lines to stderr. A thread
reads the destination's stdout: every echoed STATE "commits" that state and the ones sent before
it (the latest committed state is written to --state-file, atomically, without fsync). Prints a
JSON summary (records per stream, states sent and committed) on stdout.

It is not ferry's design; it is the baseline ferry must beat with all its bookkeeping on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
from typing import Any, BinaryIO

import orjson

BUFFER = 1 << 20


def state_key(state: dict[str, Any]) -> bytes:
    """What identifies a state across a destination's re-serialisation."""
    kept = {k: v for k, v in state.items() if k not in ("sourceStats", "destinationStats")}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


class Ledger:
    def __init__(self, state_file: str | None) -> None:
        self.lock = threading.Lock()
        self.pending: collections.deque[bytes] = collections.deque()
        self.sent = 0
        self.committed = 0
        self.state_file = state_file

    def sent_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.pending.append(state_key(state))
            self.sent += 1

    def echoed(self, state: dict[str, Any]) -> None:
        key = state_key(state)
        with self.lock:
            if key not in self.pending:
                print(f"naive: unknown state echoed: {key[:100]!r}", file=sys.stderr)
                return
            while self.pending:
                self.committed += 1
                if self.pending.popleft() == key:
                    break
        if self.state_file:
            tmp = self.state_file + ".tmp"
            with open(tmp, "wb") as handle:
                handle.write(orjson.dumps(state))
            os.replace(tmp, self.state_file)


def read_echoes(stdout: BinaryIO, ledger: Ledger) -> None:
    for line in stdout:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            print(f"destination: {line.decode(errors='replace').rstrip()}", file=sys.stderr)
            continue
        if message.get("type") == "STATE":
            ledger.echoed(message["state"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--destination", required=True)
    parser.add_argument("--source-config", required=True)
    parser.add_argument("--destination-config", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--state-file")
    args = parser.parse_args()

    destination = subprocess.Popen(
        [args.destination, "write", "--config", args.destination_config, "--catalog", args.catalog],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=BUFFER,
    )
    source = subprocess.Popen(
        [args.source, "read", "--config", args.source_config, "--catalog", args.catalog],
        stdout=subprocess.PIPE,
        bufsize=BUFFER,
    )
    assert source.stdout is not None
    assert destination.stdin is not None
    assert destination.stdout is not None
    ledger = Ledger(args.state_file)
    echoes = threading.Thread(target=read_echoes, args=(destination.stdout, ledger), daemon=True)
    echoes.start()

    counts: collections.Counter[str] = collections.Counter()
    out = destination.stdin
    for line in source.stdout:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip():
                print(f"source: {line.decode(errors='replace').rstrip()}", file=sys.stderr)
            continue
        kind = message.get("type")
        if kind == "RECORD":
            counts[message["record"]["stream"]] += 1
            out.write(line)
        elif kind == "STATE":
            ledger.sent_state(message["state"])
            out.write(line)
        else:
            print(f"source {kind}: {line[:200].decode(errors='replace')}", file=sys.stderr)
    out.close()
    source_code = source.wait()
    destination_code = destination.wait()
    echoes.join()
    summary = {
        "records": sum(counts.values()),
        "streams": dict(counts),
        "states_sent": ledger.sent,
        "states_committed": ledger.committed,
        "source_exit": source_code,
        "destination_exit": destination_code,
    }
    json.dump(summary, sys.stdout)
    print()
    return 0 if source_code == destination_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
