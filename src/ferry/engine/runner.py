"""`ferry sync`: prepare a connection once, then run attempts until one succeeds or retries end."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ferry.engine import catalog_cache, commands, log_context
from ferry.engine.catalog_cache import Catalog, CatalogKey
from ferry.engine.config import resolve_env
from ferry.engine.connection import Connection, Endpoint, IdleTimeouts
from ferry.engine.connector_config import ConnectorConfigs, config_fingerprint
from ferry.engine.secrets import masked_config
from ferry.engine.single_pod import SinglePodAttempt
from ferry.engine.stats import SyncStats
from ferry.engine.sync import Attempt, AttemptOutcome, AttemptPlan
from ferry.errors import (
    Cancelled,
    ConfigError,
    ConnectionBusy,
    ConnectorNotFound,
    FerryError,
    InternalError,
    ProtocolViolation,
    RecordCountMismatch,
)
from ferry.protocol import configure_catalog, encode
from ferry.protocol.catalog import (
    check_destination_operations,
    needs_destination_catalog,
    select_streams,
    stream_descriptor,
    with_generations,
)
from ferry.protocol.messages import (
    CATALOG,
    DESTINATION_CATALOG,
    FULL_REFRESH,
    OVERWRITE,
    STREAM_COMPLETE,
    AirbyteCatalog,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
    ConnectorSpecification,
    DestinationCatalog,
    StreamDescriptor,
)
from ferry.protocol.stream_status import stream_status_lines
from ferry.runtimes import get_runtime
from ferry.runtimes.base import (
    ConnectorInvocation,
    ConnectorRef,
    Role,
    RunLabels,
    Runtime,
    Verb,
)
from ferry.runtimes.pods.layout import PodPair, container_settings
from ferry.runtimes.resolve import resolve_reference
from ferry.store import Store, StoredConfig, StreamCounts
from ferry.store.base import ConfigRole
from ferry.store.state import keeping_streams

logger = logging.getLogger("ferry.sync")

RETRY_BACKOFF_SECONDS = (1.0, 5.0, 15.0)
BUSY_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SyncOptions:
    runtime: str | None = None  # overrides the connection's runtime for unprefixed references
    full_refresh: bool = False
    retries: int = 2
    relay: bool = False
    spec_cache: bool = True  # False: run each connector's spec, and refresh its cached one
    catalog_cache: bool = True  # False: run discover, and refresh the cached catalog
    layout: str | None = None  # overrides the connection's kubernetes.layout
    idle_timeout: float | None = None  # seconds; overrides both of the connection's timeouts
    refresh: str | None = None  # "truncate" | "merge": re-read `streams` from scratch
    streams: tuple[str, ...] = ()  # the streams --refresh names (NAME or NAMESPACE.NAME); all if ()
    strict_counts: bool = False  # a count the destination does not confirm fails the run
    # Seconds to wait for another ferry's sync of the connection to end (inf: no limit);
    # None refuses at once.
    wait: float | None = None


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
            "records_sent": self.stats.records_sent,
            "bytes_sent": self.stats.bytes_sent,
            "records_committed": self.stats.records_committed,
            "bytes_committed": self.stats.bytes_committed,
            "seconds": round(self.stats.elapsed, 3),
            "states_committed": self.stats.states_committed,
            "records_rejected": self.stats.records_rejected,
            "streams": [s.as_dict() for s in self.stats.streams.values()],
            "error": str(self.error) if self.error else None,
            "failure_type": self.error.failure_type if self.error else None,
            "warnings": self.warnings,
        }


def resolve_endpoint(
    endpoint: Endpoint, connection: Connection, options: SyncOptions, role: Role
) -> ConnectorRef:
    try:
        ref = resolve_reference(
            endpoint.reference,
            default_runtime=options.runtime or connection.runtime,
            options=endpoint.options,
        )
    except ConnectorNotFound:
        raise
    except ConfigError as e:  # an option the runtime would ignore, an unknown runtime
        raise ConfigError(f"{role}: {e}") from None
    if options.relay and ref.runtime != "local":  # --relay: every container connector relays
        ref = replace(ref, options=msgspec.structs.replace(ref.options, relay=True))
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
        self.configs: ConnectorConfigs | None = None  # set by `plan`
        self._fingerprints: dict[ConfigRole, str | None] = {}
        self._current: Attempt | None = None
        self._stopping = False
        self.layout = connection.kubernetes.with_layout(options.layout)

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
        if self.layout.single_pod:
            check_single_pod(source, destination)
        for ref in (source, destination):
            self.runtimes.setdefault(ref.runtime, get_runtime(ref.runtime))
        source_config = resolve_env(self.connection.source.config, "source.config")
        destination_config = resolve_env(self.connection.destination.config, "destination.config")
        source_spec, destination_spec = await asyncio.gather(
            self._spec(source, "source"), self._spec(destination, "destination")
        )
        configs = self.configs = ConnectorConfigs(
            self.store,
            self.connection.name,
            {"source": source_config, "destination": destination_config},
            {"source": source_spec, "destination": destination_spec},
        )
        commands.validate_config(source_spec, source_config, "source.config")
        commands.validate_config(destination_spec, destination_config, "destination.config")
        configured = await self._configured_catalog(source, configs)
        if needs_destination_catalog(configured):
            offered, why_none = await self._destination_catalog(destination)
            check_destination_operations(configured, offered, why_none)
        return AttemptPlan(
            source=source,
            destination=destination,
            source_config=json.dumps(configs.current("source")).encode(),
            destination_config=json.dumps(configs.current("destination")).encode(),
            catalog=configured,
            labels=RunLabels("pending", self.connection.name),
            timeouts=self._timeouts(),
        )

    def _timeouts(self) -> IdleTimeouts:
        seconds = self.options.idle_timeout
        if seconds is None:
            return self.connection.timeouts
        return IdleTimeouts(source=seconds, destination=seconds)

    async def _sweep_orphans(self) -> None:
        """Remove what killed ferry processes left on the runtimes of this sync (SIGKILL leaves
        them no chance to stop their containers) before starting new connectors: a sync on
        Docker is also the `ferry gc` of what a killed sync left there."""
        for runtime in self.runtimes.values():
            try:
                for line in await runtime.sweep_orphans():
                    logger.info("%s", line)
            except FerryError as error:
                logger.debug("could not look for what killed syncs left: %s", error)

    async def _destination_catalog(
        self, destination: ConnectorRef
    ) -> tuple[DestinationCatalog | None, str]:
        """The destination's DESTINATION_CATALOG, or None and why there is none."""
        configs = self.configs
        if configs is None:
            raise InternalError("the destination's catalog was asked for before its config")
        try:
            catalog, _ = await self._discover(
                destination, "destination", configs, DESTINATION_CATALOG
            )
        except FerryError as error:  # never cached: the next sync runs discover again
            logger.debug("the destination's discover failed: %s", error)
            return None, f"its discover failed: {error}"
        if not isinstance(catalog, DestinationCatalog):
            raise InternalError("the destination's discover gave a source's catalog")
        return catalog, ""

    async def _configured_catalog(
        self, source: ConnectorRef, configs: ConnectorConfigs
    ) -> ConfiguredAirbyteCatalog:
        """The connection's streams configured from the source's catalog. A cached catalog the
        connection's streams do not fit (a stream added since) is discovered again, once."""
        catalog, cached = await self._source_catalog(source, configs, use_cache=True)
        try:
            return configure_catalog(
                catalog, self.connection.streams, full_refresh=self.options.full_refresh
            )
        except ConfigError as error:
            if not cached:
                raise
            logger.info("source: the cached catalog does not fit (%s); discovering again", error)
        catalog, _ = await self._source_catalog(source, configs, use_cache=False)
        return configure_catalog(
            catalog, self.connection.streams, full_refresh=self.options.full_refresh
        )

    async def _source_catalog(
        self, source: ConnectorRef, configs: ConnectorConfigs, *, use_cache: bool
    ) -> tuple[AirbyteCatalog, bool]:
        catalog, cached = await self._discover(source, "source", configs, CATALOG, use_cache)
        if not isinstance(catalog, AirbyteCatalog):
            raise ProtocolViolation("the source's discover sent no catalog")
        return catalog, cached

    async def _discover(
        self,
        ref: ConnectorRef,
        role: ConfigRole,
        configs: ConnectorConfigs,
        kind: str,
        use_cache: bool = True,
    ) -> tuple[Catalog, bool]:
        """The catalog `discover` gives with the role's current config (a config the connector
        sends is kept), or the one cached for this code and config; and whether it was cached.
        The config was validated against the spec already: discover runs directly."""
        config = json.dumps(configs.current(role)).encode()
        key = await self._catalog_key(ref, role, kind, config)
        if key is not None and use_cache and self.options.catalog_cache:
            cached = catalog_cache.load_catalog(key)
            if cached is not None:
                logger.info("%s: catalog from the cache (discovered %s)", role, _ago(cached.age))
                return cached.catalog, True
        message = await commands.run_command(
            ref,
            "discover",
            {"config": config},
            self.runtimes[ref.runtime],
            kind,
            on_config=lambda update: configs.update(role, update),
            # Its pod or container is named and labelled after the connection (`ferry gc`).
            labels=RunLabels("pending", self.connection.name, role),
        )
        catalog = commands.catalog_of(message, ref)
        if key is not None:
            # Under the config the connector runs with from now on: a new one if it sent it.
            after = json.dumps(configs.current(role)).encode()
            catalog_cache.store_catalog(replace(key, config=after), catalog)
        return catalog, False

    async def _catalog_key(
        self, ref: ConnectorRef, role: ConfigRole, kind: str, config: bytes
    ) -> CatalogKey | None:
        """None when the runtime cannot tell the connector's code (nothing is cached)."""
        fingerprint = await self._fingerprint(ref, role)
        if fingerprint is None:
            return None
        return CatalogKey(fingerprint, kind, config, ref.options.env)

    async def _fingerprint(self, ref: ConnectorRef, role: ConfigRole) -> str | None:
        """The runtime's fingerprint of the connector's code, asked once per sync."""
        if role not in self._fingerprints:
            self._fingerprints[role] = await self.runtimes[ref.runtime].fingerprint(ref)
        return self._fingerprints[role]

    async def _spec(self, ref: ConnectorRef, role: ConfigRole) -> ConnectorSpecification:
        runtime = self.runtimes[ref.runtime]
        if self.options.spec_cache:
            return await commands.cached_spec(ref, runtime, await self._fingerprint(ref, role))
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

        def invocation(ref: ConnectorRef, verb: Verb, role: Role) -> ConnectorInvocation:
            labels = RunLabels("dry-run", self.connection.name, role)
            return ConnectorInvocation(ref, verb, files[role], labels, job_id="dry-run")

        return [
            invocation(destination, "write", "destination"),
            invocation(source, "read", "source"),
        ]

    def dry_run_pair(self, invocations: Sequence[ConnectorInvocation]) -> PodPair:
        """The single pod of `dry_run_invocations()` (destination, source)."""
        destination, source = invocations
        check_single_pod(source.connector, destination.connector)
        labels = RunLabels("dry-run", self.connection.name, "connector")
        return PodPair(source, destination, self.layout, labels)

    async def run(self) -> SyncResult:
        try:
            with log_context.running(self.connection.name):
                # The connection first: no connector runs while another ferry syncs it.
                run_id = await self._start_run(self.options.full_refresh)
                plan = await self._planned(run_id)
                await self._sweep_orphans()
                with log_context.running(self.connection.name, run_id):
                    return await self._attempts_of_run(plan, run_id)
        finally:
            await asyncio.gather(
                *(r.close() for r in self.runtimes.values()), return_exceptions=True
            )

    async def _planned(self, run_id: int) -> AttemptPlan:
        """The run's plan, its streams' generations started; a failure ends the run."""
        try:
            plan = await self.plan()
            refreshed = select_streams(plan.catalog, self.options.streams)
            refreshed = refreshed if self.options.refresh else []
            catalog = self._start_generations(plan.catalog, run_id, refreshed)
        except BaseException as failure:
            self._end_run_early(run_id, failure)
            raise
        return replace(plan, catalog=catalog, labels=RunLabels(str(run_id), self.connection.name))

    def _end_run_early(self, run_id: int, failure: BaseException) -> None:
        if isinstance(failure, FerryError):
            self.store.finish_run(run_id, "failed", str(failure), failure.failure_type)
        else:  # interrupted
            self.store.finish_run(run_id, "cancelled", "stopped before the sync started")

    async def clear(self) -> list[StreamDescriptor]:
        """`ferry clear`: empty the named streams (every stream if none) in the destination.

        As the platform's clear: their generation is bumped and their state dropped, then the
        destination's write gets a catalog of them with minimum = generation, no record and a
        COMPLETE for each (so it drops every older generation). Recorded as a run.
        """
        try:
            run_id = await self._start_run(full_refresh=True)
            try:
                plan = await self.plan()
                streams = select_streams(plan.catalog, self.options.streams)
                await self._clear(plan, run_id, streams)
            except BaseException as failure:
                self._end_run_early(run_id, failure)
                raise
            self.store.finish_run(run_id, "succeeded")
            return streams
        finally:
            await asyncio.gather(
                *(r.close() for r in self.runtimes.values()), return_exceptions=True
            )

    async def _clear(self, plan: AttemptPlan, run_id: int, streams: list[StreamDescriptor]) -> None:
        name = self.connection.name
        # As the platform: generations and state change at the start, before the destination runs.
        self.store.bump_generations(name, streams)
        drop_state(self.store, name, streams, every=len(streams) == len(plan.catalog.streams))
        cleared = ConfiguredAirbyteCatalog(
            streams=[c for c in plan.catalog.streams if stream_descriptor(c) in streams]
        )
        catalog = with_generations(cleared, run_id, self.store.generations(name), streams)
        files = {"config": plan.destination_config, "catalog": encode(catalog)}
        completions = stream_status_lines(streams, STREAM_COMPLETE, time.time() * 1000)
        labels = RunLabels(str(run_id), name, "destination")
        runtime = self.runtimes[plan.destination.runtime]
        await commands.write_input(plan.destination, files, runtime, completions, labels)

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
        if status == "cancelled":
            # The user's stop explains the rest, whatever the connectors did about it (a
            # Ctrl-C reaches every process of the terminal's group, not only ferry).
            if error is not None and not isinstance(error, Cancelled):
                logger.warning("while stopping: %s", str(error).splitlines()[0])
            error = Cancelled("the sync was stopped; committed state is kept")
        self.store.finish_run(
            run_id, status, str(error) if error else None, error.failure_type if error else None
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

    async def _start_run(self, full_refresh: bool) -> int:
        """Start the run, waiting (with --wait) while another ferry syncs the connection."""
        loop = asyncio.get_running_loop()
        deadline = None if self.options.wait is None else loop.time() + self.options.wait
        announced = False
        while True:
            try:
                return self.store.start_run(
                    self.connection.name,
                    full_refresh=full_refresh,
                    runtime=self.options.runtime or self.connection.runtime,
                )
            except ConnectionBusy as busy:
                if deadline is None:
                    raise
                if loop.time() >= deadline:
                    raise ConnectionBusy(f"{busy} (waited {self.options.wait:.0f}s)") from None
                if self._stopping:
                    raise Cancelled("stopped while waiting for the connection") from None
                if not announced:
                    logger.warning("waiting: %s", busy)
                    announced = True
                await asyncio.sleep(min(BUSY_POLL_SECONDS, max(deadline - loop.time(), 0)))

    def _start_generations(
        self, catalog: ConfiguredAirbyteCatalog, run_id: int, refreshed: list[StreamDescriptor]
    ) -> ConfiguredAirbyteCatalog:
        """Bump the generation of full-refresh and refreshed streams, as the platform does at
        a job's start, drop the refreshed streams' state, and set the catalog's generations."""
        name = self.connection.name
        bumped = [stream_descriptor(c) for c in catalog.streams if c.sync_mode == FULL_REFRESH]
        self.store.bump_generations(name, list(dict.fromkeys([*bumped, *refreshed])))
        drop_state(self.store, name, refreshed, every=len(refreshed) == len(catalog.streams))
        truncate = refreshed if self.options.refresh == "truncate" else []
        return with_generations(catalog, run_id, self.store.generations(name), truncate)

    async def _attempt(self, plan: AttemptPlan, run_id: int, number: int) -> AttemptOutcome:
        name = self.connection.name
        attempt_id = self.store.start_attempt(run_id)
        state = self._resume_state(plan.catalog, number)

        def commit(states: Sequence[AirbyteStateMessage]) -> None:
            self.store.commit_states(name, attempt_id, states, progress=_counts(attempt.stats))

        configs = self.configs
        if configs is not None:  # a connector may have sent a new config since the last attempt
            plan = replace(
                plan,
                source_config=json.dumps(configs.current("source")).encode(),
                destination_config=json.dumps(configs.current("destination")).encode(),
            )
        keep = self._keep_config
        attempt: Attempt
        if self.layout.single_pod:
            attempt = SinglePodAttempt(
                plan, self.runtimes, state, commit, self.layout, number=number, keep_config=keep
            )
        else:
            attempt = Attempt(plan, self.runtimes, state, commit, number=number, keep_config=keep)
        self._current = attempt
        self.on_attempt(attempt)
        if self._stopping:
            attempt.request_stop()
        try:
            outcome = await attempt.run()
        except FerryError as error:
            outcome = AttemptOutcome(attempt.stats, error=error)
        finally:
            self._current = None
        if self.options.strict_counts and outcome.error is None and outcome.stats.mismatches:
            outcome.error = RecordCountMismatch(
                "--strict-counts: the counts differ: " + "; ".join(outcome.stats.mismatches)
            )
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
            outcome.error.failure_type if outcome.error else None,
        )
        return outcome

    def _keep_config(self, role: Role, config: dict[str, Any]) -> None:
        if self.configs is not None and role != "connector":
            self.configs.update(role, config)

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


def check_single_pod(source: ConnectorRef, destination: ConnectorRef) -> None:
    """Both connectors must run on the same pod runtime, their blocks set only container keys."""
    runtimes = {source.runtime, destination.runtime}
    if len(runtimes) != 1 or not runtimes <= {"podman", "kubernetes"}:
        raise ConfigError(
            "the single-pod layout needs both connectors on podman or both on kubernetes "
            f"(here: source on {source.runtime}, destination on {destination.runtime}); "
            "try --runtime podman or --runtime kubernetes"
        )
    container_settings(ConnectorInvocation(source, "read", labels=RunLabels(role="source")))
    labels = RunLabels(role="destination")
    container_settings(ConnectorInvocation(destination, "write", labels=labels))


def drop_state(
    store: Store, connection: str, streams: Sequence[StreamDescriptor], *, every: bool
) -> None:
    """Forget the state of `streams` (of the whole connection when `every`)."""
    if every:
        store.reset_state(connection)
        return
    for stream in streams:
        store.reset_state(connection, stream)


async def shown_config(connection: Connection, stored: StoredConfig) -> dict[str, Any]:
    """A stored connector config for display: secrets masked (by the connector's spec; every
    value when the spec cannot be had), and whether the file's config changed since."""
    endpoint = connection.source if stored.role == "source" else connection.destination
    where = f"{stored.role}.config"
    try:
        file_config = resolve_env(endpoint.config, where)
        file_changed: bool | None = config_fingerprint(file_config) != stored.file_fingerprint
    except ConfigError:
        file_changed = None  # a variable it uses is unset here
    spec: ConnectorSpecification | None = None
    ref = resolve_endpoint(endpoint, connection, SyncOptions(), stored.role)
    runtime = get_runtime(ref.runtime)
    try:
        spec = await commands.cached_spec(ref, runtime)
    except FerryError as error:
        logger.warning("cannot get the %s's spec (%s); every value is masked", stored.role, error)
    finally:
        await runtime.close()
    return {
        "updated_at": stored.updated_at.isoformat(timespec="seconds"),
        "file_changed": file_changed,
        "config": masked_config(stored.config, spec),
    }


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _config_file(endpoint: Endpoint, where: str) -> bytes:
    return json.dumps(resolve_env(endpoint.config, where)).encode()


def _counts(stats: SyncStats) -> list[StreamCounts]:
    # tuple() copies the streams at once: a commit reads them from a thread (Attempt).
    return [
        StreamCounts(
            StreamDescriptor(s.name, s.namespace),
            s.records_sent,
            s.bytes_sent,
            s.records_committed,
            s.bytes_committed,
            s.records_rejected,
        )
        for s in tuple(stats.streams.values())
    ]


def _status(outcome: AttemptOutcome, stopping: bool) -> str:
    if outcome.cancelled or stopping:
        return "cancelled"
    return "failed" if outcome.error else "succeeded"
