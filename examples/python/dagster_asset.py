"""Dagster assets fed by ferry (not run in CI: Dagster is not a dependency).

`faker_users` syncs a connection and reports ferry's counts as asset metadata; `faker_explore`
reads a source straight into a DuckDB file without a destination connector.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg  # type: ignore[import-not-found]

import ferry

CONNECTION = Path(__file__).parent / "faker-to-duckdb.yaml"


@dg.asset
def faker_users() -> dg.MaterializeResult:
    result = ferry.sync(CONNECTION, streams=["users"])
    return dg.MaterializeResult(
        metadata={
            "run_id": result.run_id,
            "records_sent": result.records_sent,
            "bytes_sent": result.bytes_sent,
            "duration_seconds": result.duration,
        }
    )


@dg.asset
def faker_explore() -> dg.MaterializeResult:
    tables = ferry.read("source-faker", {"count": 1000, "seed": 1}).to_duckdb("explore.duckdb")
    return dg.MaterializeResult(metadata={"tables": ", ".join(tables)})


defs = dg.Definitions(assets=[faker_users, faker_explore])
