"""The public Python API, called exactly as the README shows, against the real source-faker
(installed once per machine by `installed_faker_home`) and the real destination-duckdb."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

import ferry
from ferry.store import open_store

PROBE = Path(__file__).parent / "rss_probe.py"


def faker_connection(tmp_path: Path, count: int = 300) -> ferry.Connection:
    return ferry.Connection(
        "faker-to-duckdb",
        source={"connector": "source-faker", "config": {"count": count, "seed": 1}},
        destination={
            "connector": "destination-duckdb",
            "config": {"path": str(tmp_path / "faker.duckdb")},
        },
        streams=["users", "products"],
    )


def test_the_public_names_are_the_api_packages_and_the_errors() -> None:
    """`ferry/__init__.py` lists the API's names without importing it (the first-party
    connectors import `ferry.errors` alone): the list must be what `ferry.api` exports."""
    import ferry.api
    import ferry.errors

    own = {n for n in ferry.__all__ if hasattr(ferry.errors, n)} | {"__version__"}
    assert set(ferry.__all__) - own == set(ferry.api.__all__)
    assert all(getattr(ferry, name) is getattr(ferry.api, name) for name in ferry.api.__all__)


def table_counts(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        ]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]


def test_sync_into_duckdb(source_faker: str, tmp_path: Path) -> None:
    seen: list[ferry.SyncProgress] = []
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    connection = faker_connection(tmp_path)
    result = ferry.sync(connection, state_db=state_db, on_progress=seen.append)

    assert result.status == "succeeded"
    assert result.connection == "faker-to-duckdb"
    assert result.attempts == 1
    assert {s.stream: s.records_sent for s in result.streams} == {"users": 300, "products": 100}
    assert all(s.bytes_sent > 0 for s in result.streams)
    assert [(s.records_committed, s.bytes_committed) for s in result.streams] == [
        (s.records_sent, s.bytes_sent) for s in result.streams
    ]
    assert result.records_sent == 400
    assert result.bytes_sent == sum(s.bytes_sent for s in result.streams)
    assert result.duration > 0
    assert table_counts(tmp_path / "faker.duckdb") == {"users": 300, "products": 100}
    assert seen
    assert seen[-1].attempt == 1
    assert {s.stream: s.records_sent for s in seen[-1].streams} == {"users": 300, "products": 100}
    # The run is in the store's history; its committed state is what ferry.state shows.
    states = ferry.state(connection, state_db=state_db)
    assert {s["stream"]["stream_descriptor"]["name"] for s in states} == {"users", "products"}

    # A connection file works the same; the second run is a new run id.
    path = tmp_path / "connection.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "faker-to-duckdb",
                "source": {"connector": "source-faker", "config": {"count": 300, "seed": 1}},
                "destination": {
                    "connector": "destination-duckdb",
                    "config": {"path": str(tmp_path / "faker.duckdb")},
                },
            }
        )
    )
    again = ferry.sync(path, state_db=state_db, streams=["products"], refresh="truncate", retries=1)
    assert again.run_id == result.run_id + 1
    assert [s.stream for s in again.streams] == ["products"]
    summary = again.as_dict()
    assert summary["status"] == "succeeded"
    assert summary["records_sent"] == 100
    assert summary["streams"][0]["stream"] == "products"
    assert ferry.Connection.from_file(path).name == "faker-to-duckdb"


def run_probes(*counts: int) -> list[dict[str, int]]:
    """rss_probe.py for each count, the processes side by side (RSS is each one's own)."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(PROBE), str(count)], stdout=subprocess.PIPE, text=True
        )
        for count in counts
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(counts)
    return [json.loads(output) for output in outputs]


def test_reading_more_records_into_arrow_keeps_memory_to_the_table(source_faker: str) -> None:
    """20x the records: RSS grows by about the Arrow table (plus DuckDB's columnar copy), not by
    the Python dicts 20 000 records would take (~3 KB each, ~60 MB)."""
    small, large = run_probes(1000, 20000)
    assert (small["rows"], large["rows"]) == (1000, 20000)
    growth = large["maxrss"] - small["maxrss"]
    assert growth < 3 * large["nbytes"] + (16 << 20), (growth, large["nbytes"])


def test_errors_are_ferry_exceptions(source_faker: str, tmp_path: Path) -> None:
    with pytest.raises(ferry.ConfigError, match=r"config\.count"):
        ferry.check("source-faker", {"count": "many"})
    with pytest.raises(ferry.ConnectorNotFound):
        ferry.spec("no-such-connector-anywhere")
    with pytest.raises(ferry.ConfigError, match="does not exist"):
        ferry.sync(tmp_path / "missing.yaml")
    with pytest.raises(ferry.ConfigError, match="'truncate', 'merge'"):
        ferry.sync(faker_connection(tmp_path), refresh="everything")
    with pytest.raises(ferry.ConfigError, match="unknown key"):
        ferry.Connection.from_dict({"name": "x", "source": {"connector": "a", "colour": 1}})
    with pytest.raises(ferry.ConfigError, match="cannot open the DuckDB database"):
        ferry.read("source-faker", {"count": 5}).to_duckdb(tmp_path)  # a directory
    with pytest.raises(ferry.ConfigError, match="to_arrow\\(\\) reads one stream"):
        ferry.read("source-faker", {"count": 5}).to_arrow()


def test_a_connector_that_crashes_raises_connector_crashed(
    connectors_sh: Path, tmp_path: Path, ferry_home: Path
) -> None:
    with pytest.raises(ferry.ConnectorCrashed, match="broke on purpose"):
        ferry.spec(str(connectors_sh / "crash.sh"))
    connection = ferry.Connection(
        "crashing",
        source={"connector": str(connectors_sh / "crash.sh")},
        destination={"connector": "destination-null"},
    )
    with pytest.raises(ferry.FerryError) as raised:
        ferry.sync(connection, state_db=f"sqlite:///{tmp_path / 's.db'}")
    assert raised.value.exit_code == 3


def test_async_forms(source_faker: str, tmp_path: Path) -> None:
    async def main() -> tuple[Any, ...]:
        check = await ferry.async_check("source-faker", {"count": 10})
        records = [r async for r in ferry.async_read("source-faker", {"count": 40})["users"]]
        result = await ferry.async_sync(
            faker_connection(tmp_path, count=40), state_db=f"sqlite:///{tmp_path / 's.db'}"
        )
        return check, records, result

    check, records, result = asyncio.run(main())
    assert check == ferry.CheckResult(succeeded=True, message=None)
    assert len(records) == 40
    assert result.status == "succeeded"
    assert result.records_sent == 40 + 40  # faker makes min(count, 100) products


class Collected(logging.Handler):
    """The application's own log handler: what it receives, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_secrets_are_masked_for_the_applications_log_handlers(
    connectors_sh: Path, ferry_home: Path
) -> None:
    secret = "api-s3cr3t-Tok3n"
    logger = logging.getLogger("ferry")
    collected, level = Collected(), logger.level
    logger.addHandler(collected)
    logger.setLevel(logging.DEBUG)
    try:
        result = ferry.check(
            str(connectors_sh / "protocol.sh"), {"api_key": secret, "count": 1, "mode": "leak"}
        )
    finally:
        logger.removeHandler(collected)
        logger.setLevel(level)
    assert result == ferry.CheckResult(succeeded=False, message="bad key **********")
    assert "ferry.connector.protocol.sh: logging the key **********" in collected.lines
    assert not [line for line in collected.lines if secret in line]
    # jsonschema's message quotes the bad value, a secret: the raised error masks it.
    with pytest.raises(ferry.ConfigError) as raised:
        ferry.check(str(connectors_sh / "protocol.sh"), {"api_key": "abc", "count": 1})
    assert "config.api_key: '**********' is too short" in str(raised.value)


def test_cancelling_async_sync_stops_it_like_sigint(tmp_path: Path, ferry_home: Path) -> None:
    """An endless source-generator: cancelling the task stops the source, lets the destination
    confirm what it has, records the run as cancelled and keeps the committed state."""
    connection = ferry.Connection(
        "endless",
        source={"connector": "source-generator", "config": {"count": 10**9, "state_every": 1000}},
        destination={"connector": "destination-null"},
    )
    state_db = f"sqlite:///{tmp_path / 'state.db'}"

    async def main() -> None:
        flowing = asyncio.Event()

        def progress(update: ferry.SyncProgress) -> None:
            if any(s.states_committed for s in update.streams):
                flowing.set()

        task = asyncio.create_task(
            ferry.async_sync(connection, state_db=state_db, on_progress=progress)
        )
        await asyncio.wait_for(flowing.wait(), timeout=120)  # a bound, not a measurement
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ferry.state(connection, state_db=state_db)
    with open_store(state_db) as store:
        (run,) = store.list_runs("endless")
    assert run.status == "cancelled"


def test_blocking_calls_work_inside_a_running_event_loop(
    connectors_sh: Path, ferry_home: Path
) -> None:
    async def notebook_cell() -> dict[str, Any]:  # Jupyter runs cells inside its event loop
        return ferry.spec(str(connectors_sh / "protocol.sh"))

    spec = asyncio.run(notebook_cell())
    assert "api_key" in spec["connectionSpecification"]["properties"]


def test_a_read_resumes_from_the_state_a_sync_committed(tmp_path: Path, ferry_home: Path) -> None:
    """source-generator's streams are incremental: with `ferry.state`'s output a read returns
    only the records after the committed cursor."""
    config: dict[str, Any] = {"count": 500, "streams": 2, "state_every": 100}
    connection = ferry.Connection(
        "generated",
        source={"connector": "source-generator", "config": config},
        destination={"connector": "destination-null"},
    )
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    assert ferry.sync(connection, state_db=state_db).records_sent == 1000
    state = ferry.state(connection, state_db=state_db)

    assert list(ferry.read("source-generator", config, ["stream_0"], state=state)) == []
    more = list(ferry.read("source-generator", {**config, "count": 530}, state=state))
    assert sorted(record["id"] for record in more) == sorted([*range(501, 531)] * 2)


INTERRUPTED_SYNC = """
import sys
import ferry

connection = ferry.Connection(
    "endless",
    source={"connector": "source-generator", "config": {"count": 10**9, "state_every": 1000}},
    destination={"connector": "destination-null"},
)

def progress(update):
    if any(s.states_committed for s in update.streams):
        print("committing", flush=True)

try:
    ferry.sync(connection, state_db=sys.argv[1], on_progress=progress)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_stops_a_blocking_sync_cleanly(tmp_path: Path, ferry_home: Path) -> None:
    """SIGINT while `ferry.sync` blocks: the sync stops as `ferry sync` does on SIGINT (run
    recorded as cancelled, committed state kept), then KeyboardInterrupt reaches the caller."""
    state_db = f"sqlite:///{tmp_path / 'state.db'}"
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_SYNC, state_db], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == "committing\n"
        process.send_signal(signal.SIGINT)
        rest = process.stdout.read()
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    assert rest.splitlines()[-1] == "interrupted"
    with open_store(state_db) as store:
        (run,) = store.list_runs("endless")
    assert run.status == "cancelled"
    assert run.states_committed > 0
