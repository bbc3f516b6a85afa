#!/usr/bin/env python3
"""A destination for fault tests that keeps exactly what it committed.

Records are buffered; at each STATE the buffered record ids are appended to `rows_file` and the
state's cursor to `echoes_file` (both fsynced), then the state is echoed. So `rows_file` is what
the destination durably holds, and the last line of `echoes_file` the last state it echoed.

Faults (each only while the file `once` names does not exist, if set; it is created when the
fault starts), counted in records received by this run:
crash_after (print a message on stderr and exit 5), exit_after (exit 0 without reading the rest),
hang_after (stop reading and sleep; with ignore_sigterm it also ignores SIGTERM), bogus_echo_after
(echo a state that was never sent).
"""

import json
import os
import signal
import sys
import time
from typing import Any

from once import fault


def append(path, lines):
    with open(path, "a") as f:
        f.writelines(f"{line}\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())


def write(config):
    crash_after = fault(config, "crash_after")
    exit_after = fault(config, "exit_after")
    hang_after = fault(config, "hang_after")
    bogus_after = fault(config, "bogus_echo_after")
    if config.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    buffered, received = [], 0
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if message["type"] == "RECORD":
            received += 1
            buffered.append(message["record"]["data"]["id"])
            if received == crash_after:
                print("BOOM: the destination broke on purpose", file=sys.stderr, flush=True)
                return 5
            if received == exit_after:
                return 0
            if received == hang_after:
                while True:
                    time.sleep(3600)
            if received == bogus_after:
                bogus: dict[str, Any] = {
                    "type": "STREAM",
                    "stream": {"stream_descriptor": {"name": "items"}},
                }
                bogus["stream"]["stream_state"] = {"cursor": -1}
                print(json.dumps({"type": "STATE", "state": bogus}), flush=True)
        elif message["type"] == "STATE":
            append(config["rows_file"], buffered)
            buffered = []
            append(config["echoes_file"], [message["state"]["stream"]["stream_state"]["cursor"]])
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    return 0


def main():
    verb = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    if verb == "spec":
        spec: dict[str, Any] = {"connectionSpecification": {"type": "object"}}
        spec["supported_destination_sync_modes"] = ["append", "overwrite", "append_dedup"]
        print(json.dumps({"type": "SPEC", "spec": spec}), flush=True)
        return 0
    with open(args["--config"]) as config_file:
        config = json.load(config_file)
    if verb == "check":
        status = {"status": "SUCCEEDED"}
        print(json.dumps({"type": "CONNECTION_STATUS", "connectionStatus": status}), flush=True)
        return 0
    return write(config)


if __name__ == "__main__":
    sys.exit(main())
