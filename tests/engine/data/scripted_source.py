#!/usr/bin/env python3
"""A source for failure tests: emits `count` records of stream `items` with a STREAM state after
every `state_every` records, resuming after the state's cursor.

Config: count, state_every, crash_after (exit 1 after that many records of this run, without a
trace), crash_once (a file path: crash only while that file does not exist; it is created),
trace_error (emit a TRACE ERROR of that failure_type and exit 1 after crash_after records),
stray_stream (emit one record of a stream that is not in the catalog), garbage (print non-JSON),
statuses (emit STREAM_STATUS STARTED before the records and COMPLETE after them, INCOMPLETE
before a crash), exit_code (exit with this code once everything was emitted).

Faults for tests/faults (each only while the file `once` names does not exist, if set; the
source creates it when it starts the fault): hang_after (go silent after that many records of
this run, forever), fork_workers (fork that many worker processes that sleep until killed),
huge_record_bytes (the first record carries a string of that size), stderr_flood_bytes (write that
much to stderr first), delay (seconds to sleep after each record), stray_once (like stray_stream).
interrupt_after (after that many records, send SIGINT to ferry, the supervisor's parent, and
exit 130 at once: what a connector in the terminal's process group does on Ctrl-C).
Not a fault: pad (every record carries a string of that many bytes).
"""

import json
import os
import signal
import sys
import time
from typing import Any

from once import fault


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")


def emit_status(status: str) -> None:
    stream_status = {"stream_descriptor": {"name": "items"}, "status": status}
    emit(
        {
            "type": "TRACE",
            "trace": {"type": "STREAM_STATUS", "emitted_at": 0, "stream_status": stream_status},
        }
    )


def main() -> int:
    verb = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    if verb == "spec":
        emit({"type": "SPEC", "spec": {"connectionSpecification": {"type": "object"}}})
        return 0
    config = json.load(open(args["--config"]))
    if verb == "check":
        emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
        return 0
    stream = {
        "name": "items",
        "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "supported_sync_modes": ["full_refresh", "incremental"],
        "source_defined_cursor": True,
        "default_cursor_field": ["id"],
        "source_defined_primary_key": [["id"]],
    }
    if verb == "discover":
        emit({"type": "CATALOG", "catalog": {"streams": [stream]}})
        return 0
    start = 0
    if "--state" in args:
        for message in json.load(open(args["--state"])):
            start = message["stream"]["stream_state"]["cursor"]
    crash_after = config.get("crash_after")
    marker = config.get("crash_once")
    if marker and os.path.exists(marker):
        crash_after = None
    if config.get("garbage"):
        print("this line is not JSON", flush=True)
        sys.stdout.write("\x00\xff{not json either\n")
    if config.get("stray_stream") or fault(config, "stray_once"):
        emit({"type": "RECORD", "record": {"stream": "stray", "data": {}, "emitted_at": 0}})
    flood = config.get("stderr_flood_bytes")
    if flood:
        line = "x" * 1023 + "\n"
        for _ in range(flood // 1024):
            sys.stderr.write(line)
        sys.stderr.flush()
    for _ in range(config.get("fork_workers", 0)):
        if os.fork() == 0:  # a worker, as a pool would start: it lives until it is killed
            while True:
                time.sleep(3600)
    hang_after = fault(config, "hang_after")
    huge = fault(config, "huge_record_bytes")
    delay = fault(config, "delay")
    interrupt_after = fault(config, "interrupt_after")
    pad = "x" * config.get("pad", 0)
    if config.get("statuses"):
        emit_status("STARTED")
    emitted = 0
    for i in range(start + 1, config["count"] + 1):
        if crash_after is not None and emitted >= crash_after:
            if marker:
                open(marker, "w").close()
            if config.get("statuses"):  # as the Python CDK ends a failed stream
                emit_status("INCOMPLETE")
            if config.get("trace_error"):
                emit(
                    {
                        "type": "TRACE",
                        "trace": {
                            "type": "ERROR",
                            "emitted_at": 0,
                            "error": {
                                "message": "the API said no",
                                "failure_type": config["trace_error"],
                            },
                        },
                    }
                )
            sys.stdout.flush()
            return 1
        if interrupt_after is not None and emitted >= interrupt_after:
            sys.stdout.flush()
            with open(f"/proc/{os.getppid()}/stat") as stat:  # the supervisor's parent: ferry
                os.kill(int(stat.read().rsplit(")", 1)[1].split()[1]), signal.SIGINT)
            return 130
        if hang_after is not None and emitted >= hang_after:
            sys.stdout.flush()
            while True:
                time.sleep(3600)
        data = {"id": i, "pad": pad} if pad else {"id": i}
        if huge:
            data["blob"], huge = "x" * huge, None
        emit({"type": "RECORD", "record": {"stream": "items", "data": data, "emitted_at": 0}})
        emitted += 1
        if delay:
            sys.stdout.flush()
            time.sleep(delay)
        if i % config.get("state_every", 10) == 0 or i == config["count"]:
            emit(
                {
                    "type": "STATE",
                    "state": {
                        "type": "STREAM",
                        "stream": {
                            "stream_descriptor": {"name": "items"},
                            "stream_state": {"cursor": i},
                        },
                    },
                }
            )
    if config.get("statuses"):
        emit_status("COMPLETE")
    return int(config.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())
