"""The fault suite, local runtime: each fault a user may meet, and what ferry owes them after it.

Every test asserts a one-line error naming the cause (no traceback), committed state never past
the destination's last echo, a re-run with exact counts and no duplicates, and no process of the
sync left (faultkit.assert_recovers). Connectors are real processes; the store is real SQLite.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultkit import (
    HANG_GUARD,
    WRAPPED_SOURCE,
    Connection,
    assert_fails_clearly,
    assert_recovers,
    finish,
    leftovers,
    read_stderr_until,
)


@pytest.fixture
def connection(tmp_path: Path) -> Connection:
    return Connection(tmp_path)


# --- connectors that crash, exit early or misbehave ----------------------------------------------


def test_source_crash_names_its_exit_code_and_stderr(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write({"crash_after": 25, "crash_once": connection.once})
    result = connection.sync()
    assert_fails_clearly(result, 3, "the source exited with code 1")
    assert result.summary["status"] == "failed"
    assert_recovers(connection, ferry_home)


def test_destination_crash_names_its_exit_code_and_stderr_tail(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write(destination={"crash_after": 25})
    result = connection.sync()
    assert_fails_clearly(
        result, 3, "the destination exited with code 5", "BOOM: the destination broke on purpose"
    )
    (stream,) = result.summary["streams"]
    # Sent: what the destination's stdin took; committed: what its echoes covered.
    assert stream["records_committed"] == connection.echoed_cursor() == 20
    assert stream["records_committed"] <= stream["records_sent"] <= connection.count
    runs = connection.ferry("runs", str(connection.path), "--json")
    (run,) = json.loads(runs.stdout)
    assert run["records_committed"] == 20
    assert run["streams"][0]["records_sent"] == stream["records_sent"]
    assert_recovers(connection, ferry_home)


def test_a_destination_crash_is_retried_as_a_crash(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write(destination={"crash_after": 25})
    result = finish(connection.start("--retries", "1"))
    assert result.code == 0, result.err
    assert result.summary["attempts"] == 2
    assert "destination exited with code 5" in result.err  # the retry's warning says why
    assert_recovers(connection, ferry_home)


def bulky(connection: Connection, destination: dict[str, Any], **fields: Any) -> Connection:
    """10 MB of records: more than the pipes between the connectors hold."""
    connection.count, connection.state_every = 10_000, 1000
    return connection.write({"pad": 1000}, destination, **fields)


def test_destination_exiting_early_says_so(connection: Connection, ferry_home: Path) -> None:
    bulky(connection, {"exit_after": 1500})
    result = connection.sync()
    assert_fails_clearly(
        result, 3, "the destination exited with code 0 before reading all its input"
    )
    assert_recovers(connection, ferry_home)


def test_garbage_lines_are_log_output(connection: Connection, ferry_home: Path) -> None:
    connection.write({"garbage": True})
    result = connection.sync()
    assert result.code == 0, result.err
    assert_recovers(connection, ferry_home)


def test_a_50_mb_record_goes_through(connection: Connection, ferry_home: Path) -> None:
    connection.write({"huge_record_bytes": 50 << 20})
    result = connection.sync()
    assert result.code == 0, result.err
    (stream,) = result.summary["streams"]
    assert stream["bytes_sent"] > 50 << 20
    assert_recovers(connection, ferry_home)


def test_record_for_an_unknown_stream(connection: Connection, ferry_home: Path) -> None:
    connection.write({"stray_once": True})
    result = connection.sync()
    assert_fails_clearly(result, 3, "stream 'stray'", "not in the configured catalog")
    assert_recovers(connection, ferry_home)


def test_a_bogus_echo_is_an_error_and_commits_only_real_echoes(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write(destination={"bogus_echo_after": 35})
    result = connection.sync()
    assert_fails_clearly(result, 3, "echoed a state that ferry has not sent")
    assert_recovers(connection, ferry_home)


def test_a_20_mb_stderr_flood(connection: Connection, ferry_home: Path) -> None:
    connection.write({"stderr_flood_bytes": 20 << 20})
    result = connection.sync()
    assert result.code == 0, result.err
    assert_recovers(connection, ferry_home)


# --- bad input -------------------------------------------------------------------------------


def test_invalid_config_is_refused_before_anything_runs(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write(timeouts={"source_idle": "soon"})
    result = connection.sync()
    assert_fails_clearly(result, 2, "timeouts.source_idle", "'soon' is not a duration")
    assert result.summary == {}
    connection.write()
    assert_recovers(connection, ferry_home)


def test_yaml_dates_in_a_connection_file_stay_strings(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write({"start_date": "2024-01-01"})
    text = connection.path.read_text()
    assert "start_date: '2024-01-01'" in text
    connection.path.write_text(text.replace("'2024-01-01'", "2024-01-01"))  # unquoted: a date
    assert_recovers(connection, ferry_home)


# --- idle connectors ---------------------------------------------------------------------------


def test_an_idle_source_fails_the_attempt_naming_it(
    connection: Connection, ferry_home: Path
) -> None:
    connection.write({"hang_after": 25})
    result = connection.sync("--idle-timeout", "2")
    assert_fails_clearly(result, 3, "the source sent nothing for", "timeouts.source_idle 2.0s")
    assert connection.committed_cursor() == 20  # the destination drained what it got
    assert_recovers(connection, ferry_home)


def test_an_idle_destination_fails_the_attempt_naming_it(
    connection: Connection, ferry_home: Path
) -> None:
    bulky(connection, {"hang_after": 1500}, timeouts={"destination_idle": 1, "source_idle": "1h"})
    result = connection.sync()
    assert_fails_clearly(
        result, 3, "the destination neither read its input nor wrote", "timeouts.destination_idle"
    )
    assert_recovers(connection, ferry_home)


# --- signals ---------------------------------------------------------------------------------


def slow(connection: Connection, source: dict[str, Any] | None = None, **fields: Any) -> Connection:
    """A source that takes 10 s on its first run (`delay` is a fault: re-runs are fast)."""
    connection.count, connection.state_every = 1000, 5
    return connection.write({"delay": 0.01, **(source or {})}, **fields)


def test_sigkill_of_ferry_leaves_nothing_running_and_no_secrets_on_disk(
    connection: Connection, ferry_home: Path
) -> None:
    slow(connection, {"fork_workers": 2}, source_connector=WRAPPED_SOURCE)
    process = connection.start()
    connection.wait_for_echo(2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert leftovers(connection.mark) == [], "processes of the sync outlived ferry"
    left = list((ferry_home / "run").iterdir())
    assert left, "ferry was killed: its connectors' private dirs are still there"
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o700 for path in left)
    connection.ferry("runs", str(connection.path))  # any command sweeps them
    assert list((ferry_home / "run").iterdir()) == []
    assert_recovers(connection, ferry_home)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_cancels_and_keeps_commits(
    connection: Connection, ferry_home: Path, signum: int
) -> None:
    slow(connection, {"fork_workers": 2}, source_connector=WRAPPED_SOURCE)
    process = connection.start()
    connection.wait_for_echo(2)
    os.killpg(process.pid, signum)  # the whole group, as a terminal's Ctrl-C does
    result = finish(process)
    assert_fails_clearly(result, 130, "the sync was stopped; committed state is kept")
    assert result.summary["status"] == "cancelled"
    assert connection.committed_cursor() >= 10
    assert_recovers(connection, ferry_home)


def test_ctrl_c_wins_over_a_connector_that_reacts_to_it_too(
    connection: Connection, ferry_home: Path
) -> None:
    """The source gets the same Ctrl-C (were it in the terminal's group) and exits 130 at once:
    whichever ferry notices first, the run is cancelled, not a crash."""
    connection.write({"interrupt_after": 25})
    result = connection.sync()
    assert_fails_clearly(result, 130, "the sync was stopped; committed state is kept")
    assert result.summary["status"] == "cancelled"
    assert connection.committed_cursor() == 20
    assert_recovers(connection, ferry_home)


def test_a_second_sigterm_stops_a_hung_destination(
    connection: Connection, ferry_home: Path
) -> None:
    bulky(connection, {"hang_after": 1500, "ignore_sigterm": True})
    process = connection.start()
    connection.wait_for_echo(1)
    os.kill(process.pid, signal.SIGTERM)  # stops the source; the destination does not drain
    said = read_stderr_until(process, "stop again to end it now")
    os.kill(process.pid, signal.SIGTERM)  # stops everything
    result = finish(process, said)
    assert_fails_clearly(result, 130, "the sync was stopped")
    assert result.summary["status"] == "cancelled"
    assert_recovers(connection, ferry_home)


def test_one_sigterm_with_a_hung_destination_ends_within_its_idle_timeout(
    connection: Connection, ferry_home: Path
) -> None:
    # Long enough for the SIGTERM to come first, short enough to end the stop.
    bulky(connection, {"hang_after": 1500}, timeouts={"destination_idle": 3})
    process = connection.start()
    connection.wait_for_echo(1)
    os.kill(process.pid, signal.SIGTERM)
    result = finish(process)
    assert_fails_clearly(result, 130, "the sync was stopped")
    assert_recovers(connection, ferry_home)


# --- the store and concurrency ------------------------------------------------------------------


def test_two_syncs_of_one_connection(connection: Connection, ferry_home: Path) -> None:
    slow(connection)
    connection.count = 300  # 3 s: long enough for the second sync to meet the first
    connection.write({"delay": 0.01})
    first = connection.start()
    connection.wait_for_echo(1)
    second = connection.sync()
    assert_fails_clearly(second, 2, "is already being synced")
    result = finish(first)
    assert result.code == 0, result.err
    assert connection.rows() == list(range(1, connection.count + 1))
    assert_recovers(connection, ferry_home)


def test_a_read_only_store(connection: Connection, ferry_home: Path) -> None:
    connection.write()
    assert connection.sync().code == 0
    database = ferry_home / "ferry.db"
    with sqlite3.connect(database) as db:  # a store that refuses writes, even to root
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON runs"
            " BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END"
        )
    result = connection.sync()
    assert_fails_clearly(result, 3, "readonly database")
    assert leftovers(connection.mark) == []
    with sqlite3.connect(database) as db:
        db.execute("DROP TRIGGER refuse")
    rerun = connection.sync()
    assert rerun.code == 0, rerun.err
    assert connection.rows() == list(range(1, connection.count + 1))


def test_sigkill_of_ferry_takes_source_fakers_worker_pool_along(
    connection: Connection, source_faker: str
) -> None:
    """The real source-faker generates in a multiprocessing Pool of `parallelism` workers."""
    connection.path.write_text(
        yaml.safe_dump(
            {
                "name": connection.name,
                "source": {"connector": source_faker, "config": {"count": 10**7, "parallelism": 3}},
                "destination": {"connector": "destination-null"},
            }
        )
    )
    process = connection.start()
    deadline = time.monotonic() + HANG_GUARD
    # The faker process and its 3 workers.
    while len([p for p in leftovers(connection.mark, wait=0) if "source-faker" in p]) < 4:
        assert process.poll() is None, finish(process).err
        assert time.monotonic() < deadline, "source-faker never started its workers"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert leftovers(connection.mark) == [], "source-faker's workers outlived ferry"
