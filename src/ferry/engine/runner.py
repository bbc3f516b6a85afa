"""`ferry sync`: prepare a connection once, then run attempts until one succeeds or retries end."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ferry.engine import commands, log_context
from ferry.engine.config import resolve_env
from ferry.engine.connection import Connection, Endpoint
from ferry.engine.secrets import register_secrets
from ferry.engine.stats import SyncStats
from ferry.engine.sync import Attempt, AttemptOutcome, AttemptPlan
from ferry.errors import Cancelled, ConfigError, FerryError
from ferry.protocol import configure_catalog
from ferry.protocol.messages import (
    CATALOG,
    OVERWRITE,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
    ConnectorSpecification,
    StreamDescriptor,
)
from ferry.runtimes import get_runtime
from ferry.runtimes.base import (
    ConnectorInvocation,
    ConnectorRef,
    Role,
    RunLabels,
    Runtime,
    check_options_apply,
)
from ferry.runtimes.resolve import resolve_reference
from ferry.store import Store, StreamCounts
from ferry.store.state import keeping_streams

logger = logging.getLogger("ferry.sync")

RETRY_BACKOFF_SECONDS = (1.0, 5.0, 15.0)


@dataclass(frozen=True)
class SyncOptions:
    runtime: str | None = None  # overrides the connection's runtime for unprefixed references
    full_refresh: bool = False
    retries: int = 2
    relay: bool = False
    spec_cache: bool = True  # False: run each connector's spec, and refresh its cached one


@dataclass
class SyncResult:
    connection: str
    run_id: int
    status: str  # succeeded | failed | cancelled
    attempts: int
    stats: SyncStats
    catalog: ConfiguredAirbyteCatalog
    error: FerryError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "run_id": self.run_id,
            "status": self.status,
            "attempts": self.attempts,
            "records": self.stats.records,
            "bytes": self.stats.bytes,
            "seconds": round(self.stats.elapsed, 3),
            "states_committed": self.stats.states_committed,
            "streams": [s.as_dict() for s in self.stats.streams.values()],
            "error": str(self.error) if self.error else None,
            "failure_type": getattr(self.error, "failure_type", None),
            "warnings": self.warnings,
        }


def resolve_endpoint(
    endpoint: Endpoint, connection: Connection, options: SyncOptions, role: Role
) -> ConnectorRef:
    ref = resolve_reference(
        endpoint.reference,
        default_runtime=options.runtime or connection.runtime,
        options=endpoint.options,
    )
    try:
        check_options_apply(ref.runtime, ref.options)
    except ConfigError as e:
        raise ConfigError(f"{role}: {e}") from None
    if options.relay and ref.runtime != "local":  # --relay: every container connector relays
        ref = replace(ref, options=replace(ref.options, relay=True))
    return ref


class SyncRunner:
    """Owns the runtimes of one sync; `on_attempt` lets the CLI show progress of each attempt."""

    def __init__(
        self,
        connection: Connection,
        store: Store,
        options: SyncOptions,
        on_attempt: Callable[[Attempt], None] = lambda attempt: None,
    ) -> None:
        self.connection = connection
        self.store = store
        self.options = options
        self.on_attempt = on_attempt
        self.runtimes: dict[str, Runtime] = {}
        self._committed_this_run: set[StreamDescriptor] = set()
        self._current: Attempt | None = None
        self._stopping = False

    def request_stop(self) -> None:
        self._stopping = True
        if self._current is not None:
            self._current.request_stop()

    async def plan(self) -> AttemptPlan:
        """Resolve connectors, validate configs against their specs, discover, build the catalog."""
        source = resolve_endpoint(self.connection.source, self.connection, self.options, "source")
        destination = resolve_endpoint(
            self.connection.destination, self.connection, self.options, "destination"
        )
        for ref in (source, destination):
            self.runtimes.setdefault(ref.runtime, get_runtime(ref.runtime))
        source_config = resolve_env(self.connection.source.config, "source.config")
        destination_config = resolve_env(self.connection.destination.config, "destination.config")
        source_spec, destination_spec = await asyncio.gather(
            self._spec(source), self._spec(destination)
        )
        register_secrets(source_spec, source_config)
        register_secrets(destination_spec, destination_config)
        commands.validate_config(source_spec, source_config, "source.config")
        commands.validate_config(destination_spec, destination_config, "destination.config")
        # The config was validated above: run discover directly rather than validating again.
        discovered = await commands.run_command(
            source,
            "discover",
            {"config": json.dumps(source_config).encode()},
            self.runtimes[source.runtime],
            CATALOG,
        )
        assert discovered.catalog is not None
        catalog = discovered.catalog
        configured = configure_catalog(
            catalog, self.connection.streams, full_refresh=self.options.full_refresh
        )
        return AttemptPlan(
            source=source,
            destination=destination,
            source_config=json.dumps(source_config).encode(),
            destination_config=json.dumps(destination_config).encode(),
            catalog=configured,
            labels=RunLabels("pending", self.connection.name),
        )

    async def _spec(self, ref: ConnectorRef) -> ConnectorSpecification:
        runtime = self.runtimes[ref.runtime]
        if self.options.spec_cache:
            return await commands.cached_spec(ref, runtime)
        return await commands.fetch_spec(ref, runtime, refresh_cache=True)

    def dry_run_invocations(self) -> list[ConnectorInvocation]:
        """The write and read invocations a sync would start, built without running anything.

        Nothing is discovered, so the catalog file is a placeholder; the state is the committed one.
        """
        source = resolve_endpoint(self.connection.source, self.connection, self.options, "source")
        destination = resolve_endpoint(
            self.connection.destination, self.connection, self.options, "destination"
        )
        catalog = b'{"streams": "<discovered from the source when the sync runs>"}'
        state = self.store.load_state(self.connection.name).state_file()
        files = {
            "source": {
                "config": _config_file(self.connection.source, "source.config"),
                "catalog": catalog,
                **({"state": state} if state is not None and not self.options.full_refresh else {}),
            },
            "destination": {
                "config": _config_file(self.connection.destination, "destination.config"),
                "catalog": catalog,
            },
        }
        return [
            ConnectorInvocation(
                destination,
                "write",
                files["destination"],
                RunLabels("dry-run", self.connection.name, "destination"),
            ),
            ConnectorInvocation(
                source,
                "read",
                files["source"],
                RunLabels("dry-run", self.connection.name, "source"),
            ),
        ]

    async def run(self) -> SyncResult:
        try:
            with log_context.running(self.connection.name):
                plan = await self.plan()
                return await self._run_attempts(plan)
        finally:
            await asyncio.gather(
                *(r.close() for r in self.runtimes.values()), return_exceptions=True
            )

    async def _run_attempts(self, plan: AttemptPlan) -> SyncResult:
        name = self.connection.name
        run_id = self.store.start_run(
            name,
            full_refresh=self.options.full_refresh,
            runtime=self.options.runtime or self.connection.runtime,
        )
        plan = replace(plan, labels=RunLabels(str(run_id), name))
        with log_context.running(name, run_id):
            return await self._attempts_of_run(plan, run_id)

    async def _attempts_of_run(self, plan: AttemptPlan, run_id: int) -> SyncResult:
        name = self.connection.name
        outcome = AttemptOutcome(SyncStats())
        attempt_number = 0
        while True:
            attempt_number += 1
            outcome = await self._attempt(plan, run_id, attempt_number)
            error = outcome.error
            if error is None or outcome.cancelled or self._stopping:
                break
            if not error.retryable or attempt_number > self.options.retries:
                break
            delay = RETRY_BACKOFF_SECONDS[min(attempt_number, len(RETRY_BACKOFF_SECONDS)) - 1]
            logger.warning(
                "attempt %d failed (%s); retrying from the last committed state in %.0fs",
                attempt_number,
                error,
                delay,
            )
            await asyncio.sleep(delay)
        status = _status(outcome, self._stopping)
        error = outcome.error
        if status == "cancelled" and error is None:
            error = Cancelled("the sync was stopped; committed state is kept")
        self.store.finish_run(
            run_id, status, str(error) if error else None, getattr(error, "failure_type", None)
        )
        return SyncResult(
            connection=name,
            run_id=run_id,
            status=status,
            attempts=attempt_number,
            stats=outcome.stats,
            catalog=plan.catalog,
            error=error,
            warnings=outcome.warnings,
        )

    async def _attempt(self, plan: AttemptPlan, run_id: int, number: int) -> AttemptOutcome:
        name = self.connection.name
        attempt_id = self.store.start_attempt(run_id)
        state = self._resume_state(plan.catalog, number)

        def commit(states: Sequence[AirbyteStateMessage]) -> None:
            self.store.commit_states(name, attempt_id, states, progress=_counts(attempt.stats))

        attempt = self._current = Attempt(plan, self.runtimes, state, commit)
        self.on_attempt(attempt)
        if self._stopping:
            attempt.request_stop()
        try:
            outcome = await attempt.run()
        except FerryError as error:
            outcome = AttemptOutcome(attempt.stats, error=error)
        finally:
            self._current = None
        self._committed_this_run.update(
            StreamDescriptor(s.name, s.namespace)
            for s in outcome.stats.streams.values()
            if s.states_committed
        )
        self.store.finish_attempt(
            attempt_id,
            _status(outcome, self._stopping),
            _counts(outcome.stats),
            str(outcome.error) if outcome.error else None,
            getattr(outcome.error, "failure_type", None),
        )
        return outcome

    def _resume_state(self, catalog: ConfiguredAirbyteCatalog, attempt: int) -> bytes | None:
        """The `--state` file an attempt's read resumes from.

        Overwrite streams never resume: their table is replaced only by a complete new copy,
        and a read resumed mid-stream would deliver just the rest of it. With --full-refresh,
        a retry resumes only what this run itself committed.
        """
        if self.options.full_refresh and not self._committed_this_run:
            return None
        overwrite = {
            StreamDescriptor(c.stream.name, c.stream.namespace)
            for c in catalog.streams
            if c.destination_sync_mode == OVERWRITE
        }
        committed = self._committed_this_run

        def resumes(stream: StreamDescriptor) -> bool:
            return stream not in overwrite and (
                not self.options.full_refresh or stream in committed
            )

        return keeping_streams(self.store.load_state(self.connection.name), resumes).state_file()


def _config_file(endpoint: Endpoint, where: str) -> bytes:
    return json.dumps(resolve_env(endpoint.config, where)).encode()


def _counts(stats: SyncStats) -> list[StreamCounts]:
    return [
        StreamCounts(StreamDescriptor(s.name, s.namespace), s.records, s.bytes)
        for s in stats.streams.values()
    ]


def _status(outcome: AttemptOutcome, stopping: bool) -> str:
    if outcome.cancelled or stopping:
        return "cancelled"
    return "failed" if outcome.error else "succeeded"
