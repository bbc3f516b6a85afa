"""`ferry sync`, `ferry clear`, `ferry state show|reset`, `ferry config show|reset`, `ferry runs`."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ferry.cli import many
from ferry.cli.common import Subparsers, json_logs, open_cli_store, print_error, print_table
from ferry.cli.metrics import run_metrics, write_run_metrics
from ferry.cli.progress import Progress, human_bytes, stats_table
from ferry.engine.connection import load_connection, parse_duration
from ferry.engine.log_context import RunContext
from ferry.engine.runner import SyncOptions, SyncResult, SyncRunner, shown_config
from ferry.errors import ConfigError, FerryError
from ferry.protocol import to_builtins
from ferry.protocol.messages import StreamDescriptor
from ferry.runtimes import render_pod_manifests
from ferry.runtimes.base import RUNTIME_NAMES
from ferry.store import RunRecord
from ferry.store.base import CONFIG_ROLES, ConfigRole
from ferry.store.state import streams_touched

DEFAULT_PARALLEL = 4


def register(subparsers: Subparsers) -> None:
    sync = subparsers.add_parser("sync", help="stream a source into a destination")
    sync.add_argument(
        "connection",
        type=Path,
        nargs="+",
        help="connection file (YAML); several files or directories of them sync concurrently",
    )
    sync.add_argument(
        "--parallel",
        type=_positive,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"with several connections: how many sync at once (default {DEFAULT_PARALLEL})",
    )
    _wait_option(sync)
    sync.add_argument("--runtime", choices=RUNTIME_NAMES, help="runtime for unprefixed connectors")
    sync.add_argument("--full-refresh", action="store_true", help="ignore saved state, re-read all")
    sync.add_argument(
        "--retries", type=_non_negative, default=2, help="retries of transient failures"
    )
    sync.add_argument("--relay", action="store_true", help="run containers through relay sidecars")
    sync.add_argument(
        "--layout",
        choices=("pod-per-connector", "single-pod"),
        help="pods: one per connector (default) or source, destination and pump in one pod",
    )
    sync.add_argument(
        "--no-spec-cache",
        action="store_true",
        help="run the connectors' spec instead of using their cached specs (and refresh those)",
    )
    sync.add_argument(
        "--no-catalog-cache",
        action="store_true",
        help="run discover instead of using the catalogs discovered within a day (and refresh"
        " those)",
    )
    sync.add_argument(
        "--idle-timeout",
        type=_duration,
        metavar="DURATION",
        help="fail an attempt when the source sends nothing, or the destination reads nothing,"
        " for this long (90, 30m, 2h; default: the connection's timeouts, else 3h)",
    )
    sync.add_argument(
        "--refresh",
        choices=("truncate", "merge"),
        help="re-read streams from scratch (new generation, state dropped); truncate replaces"
        " their data at the end of a successful sync, merge keeps it",
    )
    _streams_option(sync, "the streams --refresh re-reads (default: every stream)")
    sync.add_argument(
        "--strict-counts",
        action="store_true",
        help="fail when the destination confirms other record counts than ferry sent",
    )
    sync.add_argument("--json", action="store_true", help="print the summary as JSON")
    sync.add_argument("--no-progress", action="store_true", help="no progress display")
    sync.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write the run's metrics (every connection's) in Prometheus text format to PATH"
        " (replaced atomically)",
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="print the pod manifests (podman/kubernetes) the sync would create, run nothing",
    )
    _store_option(sync)
    sync.set_defaults(handler=_sync)

    clear = subparsers.add_parser(
        "clear", help="empty streams in the destination and drop their state"
    )
    clear.add_argument("connection", type=Path, help="connection file (YAML)")
    _streams_option(clear, "the streams to clear (default: every stream)")
    clear.add_argument("--runtime", choices=RUNTIME_NAMES, help="runtime for unprefixed connectors")
    _wait_option(clear)
    _store_option(clear)
    clear.set_defaults(handler=_clear)

    state = subparsers.add_parser("state", help="show or reset a connection's committed state")
    state.add_argument("action", choices=("show", "reset"))
    state.add_argument("connection", type=Path)
    state.add_argument("--stream", help="only this stream (NAME or NAMESPACE.NAME)")
    _store_option(state)
    state.set_defaults(handler=_state)

    config = subparsers.add_parser(
        "config", help="show or reset the connector configs the connectors updated (CONTROL)"
    )
    config.add_argument("action", choices=("show", "reset"))
    config.add_argument("connection", type=Path)
    side = config.add_mutually_exclusive_group()
    side.add_argument("--source", action="store_true", help="only the source's")
    side.add_argument("--destination", action="store_true", help="only the destination's")
    _store_option(config)
    config.set_defaults(handler=_config)

    runs = subparsers.add_parser("runs", help="run history of a connection")
    runs.add_argument("connection", type=Path)
    runs.add_argument("--limit", type=_non_negative, default=20)
    runs.add_argument("--json", action="store_true")
    _store_option(runs)
    runs.set_defaults(handler=_runs)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-db",
        metavar="URL",
        help="state store URL: sqlite:///PATH, a file path, or postgresql://USER:PASSWORD@HOST/DB"
        " (default $FERRY_STATE_DB, else sqlite:///$FERRY_HOME/ferry.db)",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text, "--idle-timeout")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--idle-timeout: ")) from None


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        const="inf",
        type=_wait,
        metavar="DURATION",
        help="if another ferry syncs the connection, wait for it to end (at most DURATION: "
        "30s, 10m, 2h; default no limit) instead of refusing",
    )


def _wait(text: str) -> float:
    """--wait's DURATION; `inf` (--wait alone) for no limit."""
    if text == "inf":
        return math.inf
    try:
        return parse_duration(text, "--wait")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--wait: ")) from None


def _streams_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--stream", dest="streams", action="append", default=[], metavar="NAME", help=help
    )


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _sync(args: argparse.Namespace) -> int:
    options = SyncOptions(
        runtime=args.runtime,
        full_refresh=args.full_refresh,
        retries=args.retries,
        relay=args.relay,
        spec_cache=not args.no_spec_cache,
        catalog_cache=not args.no_catalog_cache,
        layout=args.layout,
        idle_timeout=args.idle_timeout,
        refresh=args.refresh,
        streams=tuple(args.streams),
        strict_counts=args.strict_counts,
        wait=args.wait,
    )
    if args.streams and not args.refresh:
        raise ConfigError("--stream names the streams of --refresh truncate|merge; add --refresh")
    if len(args.connection) > 1 or args.connection[0].is_dir():
        return many.sync_many(args, connection_files(args.connection), options)
    connection = load_connection(args.connection[0])
    if args.dry_run:
        with open_cli_store(args) as store:
            print(_dry_run(SyncRunner(connection, store, options)), end="")
        return 0
    json_lines = json_logs(args)
    progress = Progress(enabled=not args.no_progress and not args.json, json_lines=json_lines)
    started = time.monotonic()
    try:
        with open_cli_store(args) as store:
            runner = SyncRunner(connection, store, options, on_attempt=progress.follow)
            result = asyncio.run(_run_with_signals(runner, progress))
    except FerryError as error:
        elapsed = time.monotonic() - started
        write_run_metrics(args.metrics_file, [run_metrics(connection.name, error, elapsed)])
        raise
    elapsed = time.monotonic() - started
    write_run_metrics(args.metrics_file, [run_metrics(connection.name, result, elapsed)])
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_summary(result)
    _print_error(result, json_lines)
    return result.exit_code


def connection_files(paths: list[Path]) -> list[Path]:
    """The files named, a directory standing for its *.yaml and *.yml files (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise ConfigError(f"directory {path} holds no connection file (*.yaml, *.yml)")
            files += found
        else:
            files.append(path)
    return files


def _clear(args: argparse.Namespace) -> int:
    connection = load_connection(args.connection)
    options = SyncOptions(runtime=args.runtime, streams=tuple(args.streams), wait=args.wait)
    with open_cli_store(args) as store:
        cleared = asyncio.run(SyncRunner(connection, store, options).clear())
    names = ", ".join(s.name if s.namespace is None else f"{s.namespace}.{s.name}" for s in cleared)
    print(f"{connection.name}: cleared {names}")
    return 0


def _dry_run(runner: SyncRunner) -> str:
    invocations = runner.dry_run_invocations()
    runtimes = {invocation.connector.runtime for invocation in invocations}
    if not runtimes <= {"podman", "kubernetes"}:
        raise ConfigError(
            "--dry-run prints pod manifests; both connectors must run on podman or kubernetes "
            f"(here: {', '.join(sorted(runtimes))}); try --runtime kubernetes"
        )
    if runner.layout.single_pod:
        return render_pod_manifests(runner.dry_run_pair(invocations), runtimes.pop())
    namespace = runner.connection.source.options.kubernetes.namespace or "default"
    return render_pod_manifests(invocations, runtimes.pop(), namespace)


async def _run_with_signals(runner: SyncRunner, progress: Progress) -> SyncResult:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runner.request_stop)
    try:
        async with progress.showing():
            return await runner.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _print_summary(result: SyncResult) -> None:
    console = Console(stderr=False, highlight=False)
    title = (
        f"{result.connection}: {result.status} (run {result.run_id}, attempts {result.attempts})"
    )
    console.print(stats_table(result.stats, title))
    seconds = result.stats.elapsed
    stats = result.stats
    rate = human_bytes(stats.bytes_sent / max(seconds, 1e-9))
    console.print(
        f"{stats.records_sent:,} records sent, {stats.records_committed:,} committed"
        f" in {seconds:.1f}s ({rate}/s)"
    )
    for stream in stats.streams.values():
        if stream.records_rejected:
            name = f"{stream.namespace}.{stream.name}" if stream.namespace else stream.name
            console.print(
                f"{name}: {stream.records_rejected:,} records rejected by the destination"
            )
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow")


def _print_error(result: SyncResult, json_lines: bool) -> None:
    """The one-line error of a failed sync (with --json too), on stderr."""
    if result.error is not None:
        context = RunContext(result.connection, result.run_id)
        print_error(str(result.error), json_lines=json_lines, context=context)


def _state(args: argparse.Namespace) -> int:
    connection = load_connection(args.connection)
    descriptor = _descriptor(args.stream) if args.stream else None
    with open_cli_store(args) as store:
        if args.action == "reset":
            removed = store.reset_state(connection.name, descriptor)
            what = f"stream {args.stream}" if descriptor else "every stream"
            verb = "reset" if removed else "had no state to reset for"
            print(f"{connection.name}: {verb} {what}")
            return 0
        messages = store.load_state(connection.name).to_messages()
    if descriptor is not None:
        messages = [m for m in messages if descriptor in streams_touched(m)]
    print(json.dumps(to_builtins(messages), indent=2, sort_keys=True))
    return 0


def _config(args: argparse.Namespace) -> int:
    connection = load_connection(args.connection)
    roles: tuple[ConfigRole, ...] = (
        ("source",) if args.source else ("destination",) if args.destination else CONFIG_ROLES
    )
    with open_cli_store(args) as store:
        if args.action == "reset":
            for role in roles:
                removed = store.reset_connector_config(connection.name, role)
                what = "dropped the stored" if removed else "had no stored"
                print(f"{connection.name}: {what} {role} config")
            return 0
        stored = {role: store.load_connector_config(connection.name, role) for role in roles}
    shown = {
        role: None if config is None else asyncio.run(shown_config(connection, config))
        for role, config in stored.items()
    }
    print(json.dumps(shown, indent=2))
    return 0


def _descriptor(text: str) -> StreamDescriptor:
    namespace, _, name = text.rpartition(".")
    if not name:
        raise ConfigError(f"--stream {text!r} is not NAME or NAMESPACE.NAME")
    return StreamDescriptor(name=name, namespace=namespace or None)


def run_as_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "status": run.status,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "ended_at": run.ended_at.isoformat(timespec="seconds") if run.ended_at else None,
        "duration_seconds": run.duration,
        "records_sent": run.records_sent,
        "bytes_sent": run.bytes_sent,
        "records_committed": run.records_committed,
        "bytes_committed": run.bytes_committed,
        "states_committed": run.states_committed,
        "records_rejected": run.records_rejected,
        "attempts": run.attempt_count,
        "full_refresh": run.full_refresh,
        "runtime": run.runtime,
        "owner": run.owner,
        "error": run.error,
        "failure_type": run.failure_type,
        "streams": [
            {
                "stream": s.stream.name,
                "namespace": s.stream.namespace,
                "records_sent": s.records_sent,
                "bytes_sent": s.bytes_sent,
                "records_committed": s.records_committed,
                "bytes_committed": s.bytes_committed,
                "states_committed": s.states_committed,
                "records_rejected": s.records_rejected,
            }
            for s in run.streams
        ],
    }


def _runs(args: argparse.Namespace) -> int:
    connection = load_connection(args.connection)
    with open_cli_store(args) as store:
        runs = store.list_runs(connection.name, limit=args.limit)
    if args.json:
        print(json.dumps([run_as_dict(run) for run in runs], indent=2))
        return 0
    rows = [
        [
            str(run.id),
            run.status,
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{run.duration:.1f}s" if run.duration is not None else "",
            f"{run.records_sent:,}",
            f"{run.records_committed:,}",
            f"{run.records_rejected:,}",
            human_bytes(run.bytes_sent),
            str(run.attempt_count),
            (run.error or "").splitlines()[0][:80] if run.error else "",
        ]
        for run in runs
    ]
    print_table(
        rows,
        [
            "run",
            "status",
            "started",
            "duration",
            "sent",
            "committed",
            "rejected",
            "bytes",
            "attempts",
            "error",
        ],
    )
    return 0
