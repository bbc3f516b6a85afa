"""examples/python: the sync and the read run for real, as a user runs them. The Airflow and
Dagster examples need those frameworks and are not run; the ferry calls they make are made in
test_api.py (a sync of a connection file with `retries`/`streams`, `as_dict`, `to_duckdb`) and
their connection file is parsed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ferry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run_example(name: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "200"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_sync_example(source_faker: str, tmp_path: Path) -> None:
    out = run_example("sync.py", tmp_path)
    assert out.startswith("run 1: succeeded in ")
    assert "  users: 200 records, " in out
    assert (tmp_path / "faker.duckdb").exists()


def test_the_read_example(source_faker: str, tmp_path: Path) -> None:
    out = run_example("read_into_duckdb.py", tmp_path).splitlines()
    assert out[0] == 'tables: "main"."products", "main"."users", "main"."purchases"'
    assert out[2].startswith("users: 200 rows, columns id, created_at, updated_at, name, title")
    assert out[3].startswith("first product: ")


def test_the_orchestrator_examples_connection_parses() -> None:
    connection = ferry.Connection.from_file(EXAMPLES / "faker-to-duckdb.yaml")
    assert connection.name == "faker-to-duckdb"
