"""A ferry-like process for the store tests: commits state batches, or holds a run open.

Run as a script: `python store_child.py DB [options]`. Prints `run R attempt A` once, then the
batch number after each committed batch, flushed, so the parent knows what was committed.
Each batch sets every stream's state to {"batch": k, ...}: in a consistent store all streams
show the same k.
"""

from __future__ import annotations

import argparse
import sys

from ferry.protocol import convert
from ferry.protocol.messages import AirbyteStateMessage
from ferry.store import open_store


def batch(k: int, streams: list[str], pad: str, global_: bool) -> list[AirbyteStateMessage]:
    value = {"batch": k, "pad": pad}
    if global_:
        body = {
            "type": "GLOBAL",
            "global": {
                "shared_state": value,
                "stream_states": [
                    {"stream_descriptor": {"name": s}, "stream_state": value} for s in streams
                ],
            },
        }
        return [convert(body, AirbyteStateMessage)]
    return [
        convert(
            {"type": "STREAM", "stream": {"stream_descriptor": {"name": s}, "stream_state": value}},
            AirbyteStateMessage,
        )
        for s in streams
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--connection", default="conn")
    parser.add_argument("--streams", default="s0,s1,s2,s3,s4")
    parser.add_argument("--count", type=int, default=0, help="batches to commit; 0: forever")
    parser.add_argument("--pad", type=int, default=2000, help="bytes of padding per state")
    parser.add_argument("--global-every", type=int, default=0, help="every Nth batch is GLOBAL")
    parser.add_argument("--shared", action="store_true", help="start the run non-exclusively")
    parser.add_argument("--hold", action="store_true", help="start a run, then wait on stdin")
    args = parser.parse_args()
    streams = args.streams.split(",")
    pad = "x" * args.pad
    store = open_store(args.db)
    run_id = store.start_run(args.connection, exclusive=not args.shared)
    attempt_id = store.start_attempt(run_id)
    print(f"run {run_id} attempt {attempt_id}", flush=True)
    if args.hold:
        sys.stdin.read()
        return
    start = 1
    current = store.load_state(args.connection)
    if not current.is_empty:
        start = max(v["batch"] for v in current.streams.values()) + 1
    k = start
    while args.count == 0 or k < start + args.count:
        global_ = args.global_every > 0 and k % args.global_every == 0
        store.commit_states(args.connection, attempt_id, batch(k, streams, pad, global_))
        print(k, flush=True)
        k += 1
    store.finish_attempt(attempt_id, "succeeded")
    store.finish_run(run_id, "succeeded")
    store.close()


if __name__ == "__main__":
    main()
