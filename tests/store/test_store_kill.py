"""SIGKILL at random instants: the store always opens, consistent, every batch whole or absent.

A child process commits batches that set every stream to the same batch number (some batches
STREAM messages, every third one a GLOBAL message, so the kill also lands in type switches that
rewrite every row). It prints each batch number once committed. The parent kills it at a random
point, then checks: all streams show one batch number k; k is the last batch the child reported
or the one after (committed, killed before printing); the attempt's committed-state counters
match exactly the batches present; the run reads as abandoned; SQLite's integrity check passes.
Both backends (SQLite, PostgreSQL) run it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ferry.store import ABANDONED, open_store
from pgkit import wait_for_ferry_sessions

CHILD = Path(__file__).with_name("store_child.py")
STREAMS = [f"s{i}" for i in range(8)]
GLOBAL_EVERY = 3
ROUNDS = 40


def states_for(batches: range) -> int:
    return sum(1 if k % GLOBAL_EVERY == 0 else len(STREAMS) for k in batches)


def spawn(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            url,
            "--streams",
            ",".join(STREAMS),
            "--global-every",
            str(GLOBAL_EVERY),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def check_integrity(store_url: str, where: str) -> None:
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(store_url.removeprefix("sqlite://")) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",), where


def test_sigkill_at_random_points_leaves_the_store_consistent(store_url: str) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    final = 0  # last batch present in the store
    for round_ in range(ROUNDS):
        where = f"seed {seed}, round {round_}"
        killed = kill_at_random(spawn(store_url), rng, final)
        check_integrity(store_url, where)
        final = check_after_kill(store_url, where, final, killed)
    assert final > 0, f"seed {seed}: no batch was ever committed"


@dataclass
class Killed:
    """What a killed child said before it died: its run and attempt, its last batch."""

    reported: int
    run_id: int | None = None
    attempt_id: int | None = None

    def read(self, line: str) -> None:
        if line.startswith("run "):
            header = line.split()
            self.run_id, self.attempt_id = int(header[1]), int(header[3])
        else:
            self.reported = int(line)


def kill_at_random(child: subprocess.Popen[str], rng: random.Random, final: int) -> Killed:
    """SIGKILL the child while it starts up or migrates, or after a random number of batches."""
    assert child.stdout is not None
    killed = Killed(reported=final)
    if rng.random() < 0.15:
        for _ in range(rng.randrange(0, 200_000)):  # kill while it starts up or migrates
            pass
    else:
        for _ in range(rng.randrange(0, 31)):  # the header line, then batches
            line = child.stdout.readline()
            if not line:
                break
            killed.read(line)
        for _ in range(rng.randrange(0, 50_000)):  # and a random instant after that
            pass
    child.kill()
    child.wait()
    for line in child.stdout:
        killed.read(line)
    child.stdout.close()
    return killed


def check_after_kill(store_url: str, where: str, final: int, killed: Killed) -> int:
    """The store holds one whole batch, at most one past what the child reported; its run and
    attempt are abandoned with exactly the states since the last round. Returns that batch."""
    wait_for_ferry_sessions(store_url)
    with open_store(store_url) as store:
        state = store.load_state("conn")
        if state.is_empty:
            assert (final, killed.reported) == (0, 0), where
            return 0
        batches = {value["batch"] for value in state.streams.values()}
        assert len(batches) == 1, f"{where}: a batch was torn: {sorted(batches)}"
        assert set(state.streams) == {d for d in state.streams if d.name in STREAMS}
        assert len(state.streams) == len(STREAMS), where
        k: int = next(iter(batches))
        if state.type == "GLOBAL":
            assert k % GLOBAL_EVERY == 0, where
            assert state.shared_state["batch"] == k, where
        reported = killed.reported
        assert reported <= k <= reported + 1, f"{where}: store {k}, child said {reported}"
        if killed.attempt_id is None:
            assert k == final, where
            return k
        (run,) = [r for r in store.list_runs("conn", limit=100) if r.id == killed.run_id]
        assert run.status == ABANDONED, where
        (attempt,) = run.attempts
        assert attempt.id == killed.attempt_id
        assert attempt.status == ABANDONED
        assert attempt.states_committed == states_for(range(final + 1, k + 1)), where
        for totals in attempt.streams:
            assert totals.states_committed == k - final, where
    return k


def test_concurrent_processes_do_not_lose_or_corrupt_commits(store_url: str) -> None:
    count = 150
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                store_url,
                "--streams",
                f"{name}0,{name}1,{name}2",
                "--count",
                str(count),
                "--pad",
                "200",
                "--shared",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b", "c")
    ]
    for child in children:
        _out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    with open_store(store_url) as store:
        state = store.load_state("conn")
        assert state.type == "STREAM"
        assert len(state.streams) == 9
        # each child starts after whatever batch it first saw, and commits `count` batches
        assert all(value["batch"] >= count for value in state.streams.values())
        runs = store.list_runs("conn")
        assert len(runs) == 3
        assert {r.status for r in runs} == {"succeeded"}
        assert [r.states_committed for r in runs] == [3 * count] * 3
