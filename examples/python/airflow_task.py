"""An Airflow DAG whose task runs a ferry sync (not run in CI: Airflow is not a dependency).

Put the connection file next to the DAG; ferry raises on failure, which fails the task, and
Airflow's retries come on top of ferry's own (`retries=`, which resume from the last committed
state). The return value (the result as a dict) lands in XCom.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.decorators import dag, task  # type: ignore[import-not-found]

import ferry

CONNECTION = Path(__file__).parent / "faker-to-duckdb.yaml"


@dag(schedule="@hourly", start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1)
def faker_to_duckdb() -> None:
    @task
    def sync() -> dict[str, Any]:
        result = ferry.sync(CONNECTION, retries=2)
        return result.as_dict()

    sync()


faker_to_duckdb()
