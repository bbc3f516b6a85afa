#!/usr/bin/env python3
"""A tiny source for the benchmark's correctness runs: records with an exact payload size.

Config: `count` records of stream `sized` whose data is {"id": i, "payload": "xxx..."} with a
payload of exactly `payload_bytes` characters (1 byte, 100 MB, ...), then one STREAM state with
sourceStats. Standard library only, so any python3 runs it.
"""

from __future__ import annotations

import json
import sys

STREAM = "sized"
SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "payload": {"type": "string"}},
}


def emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def option(flag: str) -> str:
    return sys.argv[sys.argv.index(flag) + 1]


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "spec":
        emit(
            {
                "type": "SPEC",
                "spec": {
                    "connectionSpecification": {
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer", "minimum": 0},
                            "payload_bytes": {"type": "integer", "minimum": 0},
                        },
                    }
                },
            }
        )
        return 0
    if command == "check":
        emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
        return 0
    if command == "discover":
        stream = {"name": STREAM, "json_schema": SCHEMA, "supported_sync_modes": ["full_refresh"]}
        emit({"type": "CATALOG", "catalog": {"streams": [stream]}})
        return 0
    if command != "read":
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    with open(option("--config")) as handle:
        config = json.load(handle)
    count = int(config.get("count", 1))
    payload = b"x" * int(config.get("payload_bytes", 1))
    out = sys.stdout.buffer
    for i in range(1, count + 1):
        head = b'{"type":"RECORD","record":{"stream":"%s","data":{"id":%d,"payload":"' % (
            STREAM.encode(),
            i,
        )
        out.write(head)
        out.write(payload)
        out.write(b'"},"emitted_at":1700000000000}}\n')
    out.flush()
    state = {
        "type": "STREAM",
        "stream": {"stream_descriptor": {"name": STREAM}, "stream_state": {"id": count}},
        "sourceStats": {"recordCount": float(count)},
    }
    emit({"type": "STATE", "state": state})
    return 0


if __name__ == "__main__":
    sys.exit(main())
