#!/usr/bin/env python3
"""A destination for tests of what ferry sends it: every input line is appended to the file the
config's `record_to` names, and each STATE is echoed as soon as it is read.

Its `discover` answers a DESTINATION_CATALOG listing the config's `operations` (object_name,
sync_mode, matching_keys), as data-activation destinations do; with `discover: false` it fails
as a destination without discover does. With `control: true`, discover and write first send
their config back in a CONTROL message, its `controls` counter raised by one.
"""

import json
import sys
from typing import Any


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    verb = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    if verb == "spec":
        emit({"type": "SPEC", "spec": {"connectionSpecification": {"type": "object"}}})
        return 0
    with open(args["--config"]) as config_file:
        config = json.load(config_file)
    if verb == "check":
        emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
        return 0
    if config.get("control") and verb in ("discover", "write"):
        updated = {**config, "controls": config.get("controls", 0) + 1}
        control = {
            "type": "CONNECTOR_CONFIG",
            "emitted_at": 0,
            "connectorConfig": {"config": updated},
        }
        emit({"type": "CONTROL", "control": control})
    if verb == "discover":
        if config.get("discover") is False:
            sys.stderr.write("discover is not supported by this destination\n")
            return 1
        operations = [{"json_schema": {"type": "object"}, **o} for o in config["operations"]]
        emit({"type": "DESTINATION_CATALOG", "destination_catalog": {"operations": operations}})
        return 0
    with open(config["record_to"], "ab") as record:
        for line in sys.stdin.buffer:
            record.write(line)
            record.flush()
            if json.loads(line).get("type") == "STATE":
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
