#!/usr/bin/env python3
"""A source whose OAuth-like refresh token is single-use, as with APIs that rotate it on use.

Every check, discover and read first compares the config's `refresh_token` with the last token
it issued (kept in the file `token_file` names, so it holds across processes and containers):
a token that is not the latest fails with a TRACE ERROR config_error and exit 1. Otherwise it
issues the next token (tok-0, tok-1, ...), writes it to `token_file` and sends the whole config
with it in a CONTROL CONNECTOR_CONFIG message, then does its work.

Config: refresh_token (secret), token_file, count (records of stream `items`, default 5),
crash_flag (a path: when that file exists at `read`, it is removed and the source crashes with
exit 1 after the rotation and two records), env_dump (a directory: each command writes its
environment to VERB.json there).
"""

import json
import os
import sys
import time


def emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def fail(text):
    error = {"message": text, "failure_type": "config_error"}
    emit(
        {
            "type": "TRACE",
            "trace": {"type": "ERROR", "emitted_at": time.time() * 1000, "error": error},
        }
    )
    return 1


SPEC = {
    "type": "object",
    "required": ["refresh_token", "token_file"],
    "properties": {
        "refresh_token": {"type": "string", "airbyte_secret": True},
        "token_file": {"type": "string"},
        "count": {"type": "integer"},
        "crash_flag": {"type": "string"},
        "env_dump": {"type": "string"},
    },
}
STREAM = {
    "name": "items",
    "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
    "supported_sync_modes": ["full_refresh"],
}


def rotate(config):
    """Check the token, issue the next one; the error text, or None."""
    with open(config["token_file"]) as file:
        issued = file.read().strip()
    if config["refresh_token"] != issued:
        return f"refresh token {config['refresh_token']} is not the latest issued one"
    token = f"tok-{int(issued.split('-')[1]) + 1}"
    temporary = config["token_file"] + ".tmp"
    with open(temporary, "w") as file:
        file.write(token)
    os.replace(temporary, config["token_file"])
    updated = {**config, "refresh_token": token}
    control = {"type": "CONNECTOR_CONFIG", "emitted_at": time.time() * 1000}
    emit({"type": "CONTROL", "control": {**control, "connectorConfig": {"config": updated}}})
    return None


def main():
    verb = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    if verb == "spec":
        emit({"type": "SPEC", "spec": {"connectionSpecification": SPEC}})
        return 0
    with open(args["--config"]) as file:
        config = json.load(file)
    if config.get("env_dump"):
        with open(os.path.join(config["env_dump"], f"{verb}.json"), "w") as file:
            json.dump(dict(os.environ), file)
    problem = rotate(config)
    if problem is not None:
        return fail(problem)
    if verb == "check":
        emit({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}})
        return 0
    if verb == "discover":
        emit({"type": "CATALOG", "catalog": {"streams": [STREAM]}})
        return 0
    crash = config.get("crash_flag") and os.path.exists(config["crash_flag"])
    if crash:
        os.remove(config["crash_flag"])
    for number in range(2 if crash else config.get("count", 5)):
        record = {"stream": "items", "data": {"id": number}, "emitted_at": 0}
        emit({"type": "RECORD", "record": record})
    if crash:
        return 1
    state = {"stream_descriptor": {"name": "items"}, "stream_state": {"done": True}}
    emit({"type": "STATE", "state": {"type": "STREAM", "stream": state}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
