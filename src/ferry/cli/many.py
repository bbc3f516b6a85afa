"""`ferry sync A.yaml B.yaml ...` (or a directory): many syncs at once in one process.

Every connection gets its own SyncRunner; at most --parallel run at a time, on one event loop,
sharing one store. One live table shows a row per connection; the summary is a table with a
row per connection and the exit code is the worst of theirs. With --json, stdout is one JSON
array holding one object per connection, in the order the files were given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ferry.cli.common import json_logs, open_cli_store, print_error
from ferry.cli.metrics import run_metrics, write_run_metrics
from ferry.cli.progress import ProgressBoard, human_bytes
from ferry.engine.connection import load_connection
from ferry.engine.log_context import RunContext
from ferry.engine.runner import SyncOptions, SyncResult, SyncRunner
from ferry.engine.secrets import mask
from ferry.errors import ConfigError, FerryError

Outcome = SyncResult | FerryError


def sync_many(args: argparse.Namespace, files: list[Path], options: SyncOptions) -> int:
    if args.dry_run:
        raise ConfigError("--dry-run takes one connection file")
    connections = [load_connection(file) for file in files]  # every file is valid, or none runs
    names = [c.name for c in connections]
    twice = [name for name, n in Counter(names).items() if n > 1]
    if twice:
        raise ConfigError(
            f"connection names must differ in one sync: {', '.join(sorted(twice))} "
            "appear more than once"
        )
    json_lines = json_logs(args)
    board = ProgressBoard(
        names, enabled=not args.no_progress and not args.json, json_lines=json_lines
    )
    started = time.monotonic()
    try:
        with open_cli_store(args) as store:
            runners = [
                SyncRunner(c, store, options, on_attempt=partial(board.follow, c.name))
                for c in connections
            ]
            finished = asyncio.run(_run_all(runners, board, args.parallel))
    except FerryError as error:  # before any sync began: the store
        elapsed = time.monotonic() - started
        write_run_metrics(args.metrics_file, [run_metrics(n, error, elapsed) for n in names])
        raise
    write_run_metrics(
        args.metrics_file,
        [run_metrics(n, outcome, took) for n, (outcome, took) in zip(names, finished, strict=True)],
    )
    named = [(name, outcome) for name, (outcome, _) in zip(names, finished, strict=True)]
    if args.json:
        print(json.dumps([_as_dict(name, outcome) for name, outcome in named], indent=2))
    else:
        _print_summary(named, json_lines)
    return max(outcome.exit_code for _, outcome in named)


async def _run_all(
    runners: list[SyncRunner], board: ProgressBoard, parallel: int
) -> list[tuple[Outcome, float]]:
    """Each runner's outcome and how long it took (seconds)."""
    slots = asyncio.Semaphore(parallel)

    async def run(runner: SyncRunner) -> tuple[Outcome, float]:
        name = runner.connection.name
        async with slots:
            board.set_status(name, "running")
            started = time.monotonic()
            try:
                result: Outcome = await runner.run()
            except FerryError as error:
                result = error
            board.set_status(name, result.status if isinstance(result, SyncResult) else "failed")
            return result, time.monotonic() - started

    loop = asyncio.get_running_loop()
    # A thread per running sync for its state commits (each on its own store session), on top
    # of asyncio's default pool (min(32, cores + 4)), which 20 syncs would otherwise queue on.
    # asyncio.run shuts the pool down at the end.
    threads = parallel + min(32, (os.cpu_count() or 1) + 4)
    loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="ferry-sync"))

    def stop_all() -> None:
        for runner in runners:
            runner.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_all)
    try:
        async with board.showing():
            return list(await asyncio.gather(*(run(runner) for runner in runners)))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _as_dict(name: str, outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, SyncResult):
        return {**outcome.as_dict(), "exit_code": outcome.exit_code}
    return {
        "connection": name,
        "run_id": None,
        "status": "failed",
        "error": str(outcome),
        "exit_code": outcome.exit_code,
    }


def _print_summary(named: list[tuple[str, Outcome]], json_lines: bool) -> None:
    console = Console(stderr=False, highlight=False)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("connection", "status", "run", "attempts", "records", "bytes", "time", "error"):
        table.add_column(
            column, justify="right" if column in ("records", "bytes", "time") else "left"
        )
    records = total_bytes = 0
    for name, outcome in named:
        if isinstance(outcome, SyncResult):
            stats = outcome.stats
            records += stats.records_sent
            total_bytes += stats.bytes_sent
            error = str(outcome.error) if outcome.error else ""
            table.add_row(
                name, outcome.status, str(outcome.run_id), str(outcome.attempts),
                f"{stats.records_sent:,}", human_bytes(stats.bytes_sent), f"{stats.elapsed:.1f}s",
                _first_line(error),
            )  # fmt: skip
        else:
            table.add_row(name, "failed", "", "", "", "", "", _first_line(str(outcome)))
    console.print(table)
    statuses = Counter(
        outcome.status if isinstance(outcome, SyncResult) else "failed" for _, outcome in named
    )
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    console.print(
        f"{len(named)} connections: {counts}; {records:,} records, {human_bytes(total_bytes)}"
    )
    for name, outcome in named:
        failure = outcome.error if isinstance(outcome, SyncResult) else outcome
        if failure is not None:
            run_id = outcome.run_id if isinstance(outcome, SyncResult) else None
            context = RunContext(name, run_id)
            print_error(f"{name}: {failure}", json_lines=json_lines, context=context)


def _first_line(text: str) -> str:
    return mask(text).splitlines()[0][:60] if text else ""
