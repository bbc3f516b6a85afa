#!/usr/bin/env python3
"""A destination that holds ferry to the rules of Airbyte's Kotlin bulk CDK (the "load" CDK that
most modern destinations are built on: S3, Snowflake, BigQuery, Postgres, ClickHouse, ...).

It mirrors, in airbytehq/airbyte, under airbyte-cdk/bulk/core/load/src/main/kotlin/io/airbyte/cdk/load/:
- message/DestinationMessageDeserializer.kt: an input line that does not deserialize as an
  AirbyteMessage fails the sync (here: exit 1);
- message/DestinationMessageFactory.kt: a STREAM_STATUS INCOMPLETE throws a ConfigErrorException
  ("Received stream status INCOMPLETE message. This indicates a bug in the Airbyte platform");
  COMPLETE ends its stream; a record or status of a stream outside the catalog fails
  (DestinationCatalog.getStream);
- command/DestinationStream.kt: every configured stream's generation_id, minimum_generation_id
  and sync_id are read as non-null numbers (a missing one fails at startup).
Stricter than the CDK where the platform (and so ferry) promises more: STARTED and RUNNING fail
too (the CDK ignores them, the platform never sends them), as do LOG, CONTROL and other TRACE
messages, and a record after its stream's COMPLETE. Failures are printed as a TRACE ERROR and
the process exits 1.

Each STATE is echoed at once with destinationStats.recordCount: the records of its stream since
that stream's previous state (STREAM), or every record since the previous state (GLOBAL). With
`reject_every: N` in the config, every Nth record counts as rejected instead
(destinationStats.rejectedRecordCount), as a destination that drops invalid rows reports it;
with `lose_every: N`, every Nth record is lost without a word (a buggy destination).
With `report_to: PATH`, a JSON report of what arrived is written there at EOF.

Standard library only: it runs as a local process and, mounted into an image that has python,
in containers and pods.
"""

import json
import sys

GENERATION_FIELDS = ("generation_id", "minimum_generation_id", "sync_id")


class Refused(Exception):
    pass


def emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def key_of(descriptor_or_record):
    return (descriptor_or_record.get("namespace"), descriptor_or_record.get("name"))


class Destination:
    def __init__(self, config, catalog):
        self.reject_every = int(config.get("reject_every") or 0)
        self.lose_every = int(config.get("lose_every") or 0)
        self.streams = {}
        for configured in catalog["streams"]:
            stream = configured["stream"]
            missing = [f for f in GENERATION_FIELDS if not isinstance(configured.get(f), int)]
            if missing:
                raise Refused(f"stream {stream['name']!r} has no {', '.join(missing)}")
            self.streams[(stream.get("namespace"), stream["name"])] = {
                f: configured[f] for f in GENERATION_FIELDS
            }
        self.records = {key: 0 for key in self.streams}
        self.rejected = {key: 0 for key in self.streams}
        self.since_state = {key: [0, 0] for key in self.streams}  # written, rejected
        self.completed = []
        self.states = 0
        self.seen = 0

    def stream(self, key):
        if key not in self.streams:
            raise Refused(f"stream {key!r} is not in the configured catalog")
        return key

    def line(self, raw):
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            raise Refused(f"not an AirbyteMessage: {raw[:80]!r}") from None
        if kind == "RECORD":
            record = message["record"]
            key = self.stream((record.get("namespace"), record["stream"]))
            if key in self.completed:
                raise Refused(f"a record of {key!r} after its COMPLETE")
            self.seen += 1
            if self.lose_every and self.seen % self.lose_every == 0:
                return
            rejected = bool(self.reject_every) and self.seen % self.reject_every == 0
            (self.rejected if rejected else self.records)[key] += 1
            self.since_state[key][1 if rejected else 0] += 1
        elif kind == "STATE":
            self.echo(message)
        elif kind == "TRACE" and message["trace"].get("type") == "STREAM_STATUS":
            status = message["trace"]["stream_status"]
            key = self.stream(key_of(status["stream_descriptor"]))
            if status["status"] != "COMPLETE":
                raise Refused(f"received stream status {status['status']} for {key!r}")
            self.completed.append(key)
        else:
            raise Refused(f"a {kind} message reached the destination")

    def echo(self, message):
        state = message["state"]
        if state.get("type") == "STREAM":
            keys = [self.stream(key_of(state["stream"]["stream_descriptor"]))]
        else:
            keys = list(self.since_state)
        written = sum(self.since_state[k][0] for k in keys)
        rejected = sum(self.since_state[k][1] for k in keys)
        for k in keys:
            self.since_state[k] = [0, 0]
        stats = {"recordCount": float(written)}
        if rejected:
            stats["rejectedRecordCount"] = float(rejected)
        state["destinationStats"] = stats
        self.states += 1
        emit(message)

    def report(self):
        def name(key):
            return key[1] if key[0] is None else f"{key[0]}.{key[1]}"

        return {
            "records": {name(k): v for k, v in self.records.items()},
            "rejected": {name(k): v for k, v in self.rejected.items()},
            "states": self.states,
            "completed": [name(k) for k in self.completed],
            "catalog": {name(k): v for k, v in self.streams.items()},
        }


def main():
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
    with open(args["--catalog"]) as catalog_file:
        catalog = json.load(catalog_file)
    try:
        destination = Destination(config, catalog)
        for raw in sys.stdin:
            destination.line(raw)
    except Refused as error:
        failure = {"message": str(error), "failure_type": "system_error"}
        emit({"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": 0, "error": failure}})
        return 1
    if config.get("report_to"):
        with open(config["report_to"], "w") as report:
            json.dump(destination.report(), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
