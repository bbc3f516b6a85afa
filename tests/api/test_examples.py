"""examples/python: the sync and the read run for real, as a user runs them. The Airflow and
Dagster examples need those frameworks and are not run; the ferry calls they make are made here
(`read(...).to_duckdb(path)`) and in test_api.py (a sync of a connection file with `retries` and
`streams`, `as_dict`), and their connection file is parsed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

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
    """The README's read: every stream into DuckDB, one into Arrow, records as dicts."""
    out = run_example("read_into_duckdb.py", tmp_path).splitlines()
    assert out[0] == 'tables: "main"."products", "main"."users", "main"."purchases"'
    assert out[1].startswith("most common nationalities: [(")
    assert out[2].startswith("users: 200 rows, columns id, created_at, updated_at, name, title")
    assert out[3].startswith("first product: ")
    with duckdb.connect(str(tmp_path / "explore.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone() == (
            200,
            200,
        )
        assert con.execute(
            "SELECT typeof(id), typeof(created_at) FROM users LIMIT 1"
        ).fetchone() == (
            "BIGINT",
            "TIMESTAMP WITH TIME ZONE",
        )


def test_the_orchestrator_examples_connection_parses() -> None:
    connection = ferry.Connection.from_file(EXAMPLES / "faker-to-duckdb.yaml")
    assert connection.name == "faker-to-duckdb"
