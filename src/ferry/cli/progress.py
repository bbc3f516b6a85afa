"""Progress of a running sync. It polls the attempt's counters; the pump never calls into it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ferry.cli.common import json_log_line
from ferry.engine.log_context import RunContext
from ferry.engine.stats import SyncStats
from ferry.engine.sync import Attempt

PLAIN_INTERVAL = 5.0
LIVE_INTERVAL = 0.5


@contextlib.asynccontextmanager
async def _drawing(
    enabled: bool, draw: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """Run `draw` in the background while the block runs; nothing at all when not enabled."""
    if not enabled:
        yield
        return
    task = asyncio.create_task(draw())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def stats_table(stats: SyncStats, title: str | None = None) -> Table:
    elapsed = max(stats.elapsed, 1e-9)
    table = Table(title=title, show_edge=False, pad_edge=False)
    columns = ("stream", "records sent", "bytes sent", "records/s", "records committed")
    for column in (*columns, "states committed"):
        table.add_column(column, justify="left" if column == "stream" else "right")
    for stream in stats.streams.values():
        name = f"{stream.namespace}.{stream.name}" if stream.namespace else stream.name
        table.add_row(
            name,
            f"{stream.records_sent:,}",
            human_bytes(stream.bytes_sent),
            f"{stream.records_sent / elapsed:,.0f}",
            f"{stream.records_committed:,}",
            f"{stream.states_committed:,}",
        )
    table.add_row(
        "total",
        f"{stats.records_sent:,}",
        human_bytes(stats.bytes_sent),
        f"{stats.records_sent / elapsed:,.0f}",
        f"{stats.records_committed:,}",
        f"{stats.states_committed:,}",
        style="bold",
    )
    return table


class Progress:
    """A live table on a terminal, otherwise a plain line every few seconds on stderr."""

    def __init__(self, enabled: bool = True, json_lines: bool = False) -> None:
        self.enabled = enabled
        self.json_lines = json_lines  # --log-format json: plain progress lines are JSON too
        self.attempt: Attempt | None = None
        self.console = Console(stderr=True)

    def follow(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def showing(self) -> contextlib.AbstractAsyncContextManager[None]:
        live = self.console.is_terminal and not self.json_lines
        return _drawing(self.enabled, self._live if live else self._plain)

    async def _live(self) -> None:
        with Live(console=self.console, refresh_per_second=4, transient=True) as live:
            while True:
                if self.attempt is not None:
                    elapsed = self.attempt.stats.elapsed
                    live.update(stats_table(self.attempt.stats, f"syncing… {elapsed:.0f}s"))
                await asyncio.sleep(LIVE_INTERVAL)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(PLAIN_INTERVAL)
            if self.attempt is None:
                continue
            stats = self.attempt.stats
            elapsed = max(stats.elapsed, 1e-9)
            text = (
                f"{stats.records_sent:,} records sent, {human_bytes(stats.bytes_sent)}, "
                f"{stats.records_sent / elapsed:,.0f} records/s, "
                f"{stats.records_committed:,} committed, "
                f"{stats.states_committed} states committed, {elapsed:.0f}s"
            )
            print(self._line(text), file=sys.stderr, flush=True)

    def _line(self, text: str) -> str:
        if not self.json_lines:
            return f"ferry: {text}"
        return json_log_line("ferry.progress", text, context_of(self.attempt))


def context_of(attempt: Attempt | None) -> RunContext:
    """The connection and run an attempt belongs to, for its JSON progress lines."""
    labels = attempt.plan.labels if attempt else None
    run_id = int(labels.run_id) if labels and labels.run_id.isdigit() else None
    return RunContext(labels.connection if labels else None, run_id)


class ProgressBoard:
    """Progress of several syncs at once: a live table with a row per connection on a
    terminal, otherwise a plain line per running connection every few seconds on stderr."""

    def __init__(
        self, connections: list[str], enabled: bool = True, json_lines: bool = False
    ) -> None:
        self.enabled = enabled
        self.json_lines = json_lines  # --log-format json: plain progress lines are JSON too
        self.status = dict.fromkeys(connections, "waiting")
        self.attempts: dict[str, Attempt] = {}
        self.console = Console(stderr=True)

    def follow(self, connection: str, attempt: Attempt) -> None:
        self.attempts[connection] = attempt

    def set_status(self, connection: str, status: str) -> None:
        self.status[connection] = status

    def table(self) -> Table:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("connection", "status", "records", "bytes", "records/s", "states", "time"):
            table.add_column(
                column, justify="left" if column in ("connection", "status") else "right"
            )
        for connection, status in self.status.items():
            attempt = self.attempts.get(connection)
            if attempt is None:
                table.add_row(connection, status, "", "", "", "", "")
                continue
            stats = attempt.stats
            elapsed = max(stats.elapsed, 1e-9)
            table.add_row(
                connection,
                status,
                f"{stats.records_sent:,}",
                human_bytes(stats.bytes_sent),
                f"{stats.records_sent / elapsed:,.0f}",
                f"{stats.states_committed:,}",
                f"{stats.elapsed:.0f}s",
            )
        return table

    def showing(self) -> contextlib.AbstractAsyncContextManager[None]:
        live = self.console.is_terminal and not self.json_lines
        return _drawing(self.enabled, self._live if live else self._plain)

    async def _live(self) -> None:
        with Live(console=self.console, refresh_per_second=4, transient=True) as live:
            while True:
                live.update(self.table())
                await asyncio.sleep(LIVE_INTERVAL)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(PLAIN_INTERVAL)
            for connection, status in self.status.items():
                attempt = self.attempts.get(connection)
                if status != "running" or attempt is None:
                    continue
                stats = attempt.stats
                text = (
                    f"{stats.records_sent:,} records, {human_bytes(stats.bytes_sent)}, "
                    f"{stats.states_committed} states committed, {stats.elapsed:.0f}s"
                )
                if self.json_lines:
                    line = json_log_line("ferry.progress", text, context_of(attempt))
                else:
                    line = f"ferry: {connection}: {text}"
                print(line, file=sys.stderr, flush=True)
