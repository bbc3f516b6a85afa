"""Sync source-faker into DuckDB from Python, as `ferry sync` would, and print the result.

    ferry connectors install source-faker
    python examples/python/sync.py [COUNT]

The state store is ferry's default (FERRY_HOME/ferry.db): run it twice and the second sync
reads only what is new.
"""

from __future__ import annotations

import sys

import ferry


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    connection = ferry.Connection(
        "faker-to-duckdb-from-python",
        source={"connector": "source-faker", "config": {"count": count, "seed": 1}},
        destination={"connector": "destination-duckdb", "config": {"path": "faker.duckdb"}},
    )

    def progress(update: ferry.SyncProgress) -> None:
        sent = sum(stream.records_sent for stream in update.streams)
        print(f"attempt {update.attempt}: {sent} records sent so far", file=sys.stderr)

    try:
        result = ferry.sync(connection, on_progress=progress)
    except ferry.FerryError as error:
        sys.exit(f"sync failed: {error}")
    print(f"run {result.run_id}: {result.status} in {result.duration:.1f}s")
    for stream in result.streams:
        print(f"  {stream.stream}: {stream.records_sent} records, {stream.bytes_sent} bytes")


if __name__ == "__main__":
    main()
