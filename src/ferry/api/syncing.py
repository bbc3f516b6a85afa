"""`ferry.sync` / `ferry.async_sync` and `ferry.state`: the engine `ferry sync` runs."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ferry.api._logs import mask_ferry_logs, secrets_masked
from ferry.api._portal import LoopThread
from ferry.api.connection import Connection, engine_connection
from ferry.engine import connection as engine
from ferry.engine.results import StreamResult, SyncResult, stream_result, sync_result
from ferry.engine.runner import SyncOptions, SyncRunner
from ferry.engine.secrets import mask
from ferry.engine.sync import Attempt
from ferry.errors import ConfigError
from ferry.protocol import StreamSelection, to_builtins
from ferry.runtimes.base import RUNTIME_NAMES
from ferry.store import open_store

T = TypeVar("T")

PROGRESS_INTERVAL = 1.0  # seconds between on_progress calls
REFRESH_MODES = ("truncate", "merge")


@dataclass(frozen=True)
class SyncProgress:
    """What `on_progress` gets about once a second while an attempt runs, and at its end."""

    connection: str
    attempt: int
    elapsed: float  # seconds since the attempt started
    streams: list[StreamResult]


ProgressCallback = Callable[[SyncProgress], None]


def sync(
    connection: str | Path | Connection,
    *,
    runtime: str | None = None,
    refresh: str | None = None,
    streams: Sequence[str] | None = None,
    state_db: str | None = None,
    retries: int = 2,
    on_progress: ProgressCallback | None = None,
    catalog_cache: bool = True,
) -> SyncResult:
    """Run a sync, as `ferry sync` does, and return its result; a failure raises its FerryError.

    `connection`: a connection file or a `ferry.Connection`. `runtime` overrides the connection's
    runtime for connectors without a prefix; `refresh` ("truncate" or "merge") re-reads every
    stream; `streams` syncs only these (NAME or NAMESPACE.NAME); `state_db` is the store URL
    (default: SQLite under FERRY_HOME); `retries` of transient failures resume from the last
    committed state. `on_progress` is called from ferry's event-loop thread: keep it quick.
    `catalog_cache=False` runs the source's discover even when a catalog discovered within a
    day for the same connector code and config is cached (and refreshes that cache).
    """
    with LoopThread() as portal:
        return portal.call(
            async_sync(
                connection,
                runtime=runtime,
                refresh=refresh,
                streams=streams,
                state_db=state_db,
                retries=retries,
                on_progress=on_progress,
                catalog_cache=catalog_cache,
            )
        )


async def async_sync(
    connection: str | Path | Connection,
    *,
    runtime: str | None = None,
    refresh: str | None = None,
    streams: Sequence[str] | None = None,
    state_db: str | None = None,
    retries: int = 2,
    on_progress: ProgressCallback | None = None,
    catalog_cache: bool = True,
) -> SyncResult:
    """`ferry.sync` for asyncio code. Cancelling it stops the sync as SIGINT stops `ferry sync`:
    the source is stopped, what the destination confirms is committed."""
    with secrets_masked():
        options = SyncOptions(runtime=runtime, retries=retries, catalog_cache=catalog_cache)
        return await _sync(connection, options, refresh, streams, state_db, on_progress)


async def _sync(
    connection: str | Path | Connection,
    options: SyncOptions,
    refresh: str | None,
    streams: Sequence[str] | None,
    state_db: str | None,
    on_progress: ProgressCallback | None,
) -> SyncResult:
    parsed = _selecting(engine_connection(connection), streams)
    if options.runtime is not None and options.runtime not in RUNTIME_NAMES:
        raise ConfigError(f"runtime {options.runtime!r} is not one of {', '.join(RUNTIME_NAMES)}")
    if options.retries < 0:
        raise ConfigError(f"retries={options.retries} is negative")
    options = _with_refresh(options, refresh)
    mask_ferry_logs("ferry.connector.source", "ferry.connector.destination")
    started = time.monotonic()
    with open_store(state_db) as store:
        watcher = _ProgressWatcher(parsed.name, on_progress)
        runner = SyncRunner(parsed, store, options, on_attempt=watcher.follow)
        running = asyncio.ensure_future(runner.run())
        try:
            result = await watcher.watching(running)
        except asyncio.CancelledError:  # the run goes on until it has stopped cleanly
            runner.request_stop()
            await asyncio.wait({running})
            raise
    if result.error is not None:
        raise result.error
    summary = sync_result(result, time.monotonic() - started)
    return dataclasses.replace(summary, warnings=[mask(w) for w in summary.warnings])


def _selecting(connection: engine.Connection, streams: Sequence[str] | None) -> engine.Connection:
    """The connection restricted to `streams`, keeping the modes the connection sets for them."""
    if streams is None:
        return connection
    if isinstance(streams, str):
        raise ConfigError(f"streams={streams!r}: give a list of stream names")
    configured = {(s.namespace, s.name): s for s in connection.streams or []}
    selected = []
    for text in streams:
        namespace, _, name = text.rpartition(".")
        key = (namespace or None, name)
        if connection.streams is not None and key not in configured:
            raise ConfigError(f"stream {text!r} is not one of connection {connection.name!r}'s")
        selected.append(configured.get(key) or StreamSelection(name=name, namespace=key[0]))
    return dataclasses.replace(connection, streams=selected)


def _with_refresh(options: SyncOptions, refresh: str | None) -> SyncOptions:
    """`refresh` as `ferry sync --refresh` takes it: every selected stream is re-read."""
    if refresh is not None and refresh not in REFRESH_MODES:
        raise ConfigError(
            f"refresh={refresh!r} is not one of {', '.join(map(repr, REFRESH_MODES))} or None"
        )
    return dataclasses.replace(options, refresh=refresh)


class _ProgressWatcher:
    """Calls `on_progress` with the running attempt's counts, every PROGRESS_INTERVAL."""

    def __init__(self, connection: str, callback: ProgressCallback | None) -> None:
        self.connection = connection
        self.callback = callback
        self.attempt: Attempt | None = None
        self.number = 0
        self.started = time.monotonic()

    def follow(self, attempt: Attempt) -> None:
        self.report()  # the end of the previous attempt
        self.attempt, self.number, self.started = attempt, self.number + 1, time.monotonic()

    def report(self) -> None:
        if self.callback is None or self.attempt is None:
            return
        streams = [stream_result(s) for s in self.attempt.stats.streams.values()]
        elapsed = time.monotonic() - self.started
        self.callback(SyncProgress(self.connection, self.number, elapsed, streams))

    async def watching(self, work: asyncio.Future[T]) -> T:
        while True:
            done, _ = await asyncio.wait({work}, timeout=PROGRESS_INTERVAL)
            self.report()
            if done:
                return work.result()


def state(connection: str | Path | Connection, *, state_db: str | None = None) -> list[Any]:
    """The connection's committed state: the STATE messages a sync resumes from, as plain data
    (what `ferry state show` prints; `ferry.read(..., state=...)` takes it)."""
    name = engine_connection(connection).name
    with open_store(state_db) as store:
        return list(to_builtins(store.load_state(name).to_messages()))
