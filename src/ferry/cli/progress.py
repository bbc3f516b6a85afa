"""Progress of a running sync. It polls the attempt's counters; the pump never calls into it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
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


class _Display:
    """A live view on a terminal, otherwise plain lines every few seconds on stderr (JSON log
    lines with `--log-format json`, which also turns the live view off)."""

    def __init__(self, enabled: bool, json_lines: bool) -> None:
        self.enabled = enabled
        self.json_lines = json_lines
        self.console = Console(stderr=True)

    def showing(self) -> contextlib.AbstractAsyncContextManager[None]:
        live = self.console.is_terminal and not self.json_lines
        return _drawing(self.enabled, self._live if live else self._plain)

    def view(self) -> Table | None:
        """What the live view shows now (None: nothing yet)."""
        raise NotImplementedError

    def lines(self) -> Iterator[tuple[str, str, Attempt]]:
        """The plain progress lines due now: (prefix of the text form, text, attempt)."""
        raise NotImplementedError

    async def _live(self) -> None:
        with Live(console=self.console, refresh_per_second=4, transient=True) as live:
            while True:
                view = self.view()
                if view is not None:
                    live.update(view)
                await asyncio.sleep(LIVE_INTERVAL)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(PLAIN_INTERVAL)
            for prefix, text, attempt in self.lines():
                if self.json_lines:
                    line = json_log_line("ferry.progress", text, context_of(attempt))
                else:
                    line = f"ferry: {prefix}{text}"
                print(line, file=sys.stderr, flush=True)


def context_of(attempt: Attempt) -> RunContext:
    """The connection and run an attempt belongs to, for its JSON progress lines."""
    labels = attempt.plan.labels
    run_id = int(labels.run_id) if labels.run_id.isdigit() else None
    return RunContext(labels.connection, run_id)


class Progress(_Display):
    """Progress of one sync: a live table of its streams, or a line of totals."""

    def __init__(self, enabled: bool = True, json_lines: bool = False) -> None:
        super().__init__(enabled, json_lines)
        self.attempt: Attempt | None = None

    def follow(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def view(self) -> Table | None:
        if self.attempt is None:
            return None
        return stats_table(self.attempt.stats, f"syncing… {self.attempt.stats.elapsed:.0f}s")

    def lines(self) -> Iterator[tuple[str, str, Attempt]]:
        if self.attempt is None:
            return
        stats = self.attempt.stats
        elapsed = max(stats.elapsed, 1e-9)
        text = (
            f"{stats.records_sent:,} records sent, {human_bytes(stats.bytes_sent)}, "
            f"{stats.records_sent / elapsed:,.0f} records/s, "
            f"{stats.records_committed:,} committed, "
            f"{stats.states_committed} states committed, {elapsed:.0f}s"
        )
        yield "", text, self.attempt


class ProgressBoard(_Display):
    """Progress of several syncs at once: a live table with a row per connection, or a line
    per running connection."""

    def __init__(
        self, connections: list[str], enabled: bool = True, json_lines: bool = False
    ) -> None:
        super().__init__(enabled, json_lines)
        self.status = dict.fromkeys(connections, "waiting")
        self.attempts: dict[str, Attempt] = {}

    def follow(self, connection: str, attempt: Attempt) -> None:
        self.attempts[connection] = attempt

    def set_status(self, connection: str, status: str) -> None:
        self.status[connection] = status

    def view(self) -> Table:
        return self.table()

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

    def lines(self) -> Iterator[tuple[str, str, Attempt]]:
        for connection, status in self.status.items():
            attempt = self.attempts.get(connection)
            if status != "running" or attempt is None:
                continue
            stats = attempt.stats
            text = (
                f"{stats.records_sent:,} records, {human_bytes(stats.bytes_sent)}, "
                f"{stats.states_committed} states committed, {stats.elapsed:.0f}s"
            )
            yield f"{connection}: ", text, attempt
