"""One sync attempt: start the destination's write and the source's read, pump, commit states.

Stream statuses: before the source's first byte the destination gets a STREAM_STATUS STARTED
for every configured stream, so it knows a status-aware orchestrator will tell it how each
stream ends; the source's own statuses are forwarded in place. When the source has exited 0
without a TRACE ERROR and all its output was pumped, every stream it did not report COMPLETE or
INCOMPLETE gets COMPLETE; otherwise every stream it did not report COMPLETE gets INCOMPLETE (a
destination then keeps what an overwrite would have replaced). Then the destination's stdin is
closed.

Failure semantics:
- the source fails → the destination's stdin is closed so it flushes and echoes what it has;
  those commits are kept and the attempt fails;
- the destination fails or exits early → the source is stopped; nothing beyond its last echo
  is committed;
- a stop request (SIGINT/SIGTERM) → the source is stopped, the destination drains as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ferry.engine.connector_log import ConnectorLog
from ferry.engine.ledger import PendingState, StateLedger, decode_state_line
from ferry.engine.pump import SourceRouter, complete_lines, pump, split_envelopes
from ferry.engine.stats import SyncStats
from ferry.errors import (
    ConnectorCrashed,
    ConnectorFailed,
    FerryError,
    InternalError,
    ProtocolViolation,
)
from ferry.protocol import decode_message, encode
from ferry.protocol.messages import (
    STATE,
    STATE_STREAM,
    STREAM_COMPLETE,
    STREAM_INCOMPLETE,
    STREAM_STARTED,
    AirbyteMessage,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
    StreamDescriptor,
)
from ferry.protocol.stream_status import stream_status_lines, stream_status_of
from ferry.runtimes.base import (
    ByteWriter,
    ConnectorInvocation,
    ConnectorProcess,
    ConnectorRef,
    Role,
    RunLabels,
    Runtime,
    Verb,
)

logger = logging.getLogger("ferry.sync")

TERMINATE_GRACE = 10.0
CommitStates = Callable[[Sequence[AirbyteStateMessage]], None]


@dataclass(frozen=True)
class AttemptPlan:
    """Everything one attempt needs; the same plan is reused by retries with a fresh state."""

    source: ConnectorRef
    destination: ConnectorRef
    source_config: bytes
    destination_config: bytes
    catalog: ConfiguredAirbyteCatalog
    labels: RunLabels


@dataclass
class AttemptOutcome:
    stats: SyncStats
    error: FerryError | None = None
    warnings: list[str] = field(default_factory=list)
    cancelled: bool = False


class Attempt:
    """Runs one attempt. `request_stop` may be called from a signal handler's callback."""

    def __init__(
        self,
        plan: AttemptPlan,
        runtimes: dict[str, Runtime],
        state_file: bytes | None,
        commit: CommitStates,
    ) -> None:
        self.plan = plan
        self.runtimes = runtimes
        self.state_file = state_file
        self.commit = commit
        self.stats = SyncStats()
        for configured in plan.catalog.streams:
            self.stats.stream(configured.stream.name, configured.stream.namespace)
        self.ledger = StateLedger()
        self._streams = [
            StreamDescriptor(c.stream.name, c.stream.namespace) for c in plan.catalog.streams
        ]
        self._source_statuses: dict[StreamDescriptor, str] = {}  # the last one of each stream
        self._source_exit: asyncio.Future[int] | None = None
        self._errors: dict[Role, FerryError] = {}
        self._stop = asyncio.Event()
        self._destination: ConnectorProcess | None = None
        self._forced_stop: asyncio.Future[None] | None = None
        self._logs = {
            role: ConnectorLog(role, error_level=logging.ERROR)
            for role in ("source", "destination")
        }

    def request_stop(self) -> None:
        """First call: stop the source and let the destination drain; second: stop both."""
        if self._stop.is_set() and self._destination is not None:
            self._forced_stop = asyncio.ensure_future(self._destination.terminate(TERMINATE_GRACE))
        self._stop.set()

    async def run(self) -> AttemptOutcome:
        destination, source = await self._start_both()
        self._destination = destination
        try:
            await self._drive(source, destination)
        finally:
            await asyncio.gather(
                source.terminate(TERMINATE_GRACE), destination.terminate(TERMINATE_GRACE)
            )
        return self._outcome()

    async def _start_both(self) -> tuple[ConnectorProcess, ConnectorProcess]:
        """Destination and source, started concurrently: a container or pod start costs 0.4 s to
        seconds, and neither needs the other to be up (the pump starts once both are). If one
        cannot start, the other is stopped again."""
        catalog = encode(self.plan.catalog)
        source_files = {"config": self.plan.source_config, "catalog": catalog}
        if self.state_file is not None:
            source_files["state"] = self.state_file
        destination_files = {"config": self.plan.destination_config, "catalog": catalog}
        starts = [
            asyncio.ensure_future(
                self._start(self.plan.destination, "destination", destination_files)
            ),
            asyncio.ensure_future(self._start(self.plan.source, "source", source_files)),
        ]
        try:
            destination, source = await asyncio.gather(*starts)
        except BaseException:
            for start in starts:
                start.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            started = [s.result() for s in starts if not s.cancelled() and s.exception() is None]
            await asyncio.gather(
                *(process.terminate(TERMINATE_GRACE) for process in started),
                return_exceptions=True,
            )
            raise
        return destination, source

    async def _start(
        self, ref: ConnectorRef, role: Role, files: dict[str, bytes]
    ) -> ConnectorProcess:
        verb: Verb = "read" if role == "source" else "write"
        labels = RunLabels(self.plan.labels.run_id, self.plan.labels.connection, role)
        invocation = ConnectorInvocation(ref, verb, files, labels)
        return await self.runtimes[ref.runtime].start(invocation, self._logs[role].text)

    async def _drive(self, source: ConnectorProcess, destination: ConnectorProcess) -> None:
        router = SourceRouter(self.stats, self.ledger, self._on_source_message, self._on_text)
        pumping = asyncio.create_task(self._pump(source, destination, router))
        echoing = asyncio.create_task(self._read_destination(destination))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({pumping, echoing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not pumping.done():
                # A stop request, or the destination closed its output before the source ended.
                await source.terminate(TERMINATE_GRACE)
                if not self._stop.is_set():
                    self._fail(
                        "destination",
                        ProtocolViolation(
                            "the destination stopped reading before the source finished"
                        ),
                    )
            await pumping
            await echoing
        finally:
            for task in (pumping, echoing, stopping):
                task.cancel()
            await asyncio.gather(pumping, echoing, stopping, return_exceptions=True)
        self._check_exit("source", await self._source_exited(source), source)
        self._check_exit("destination", await destination.wait(), destination)

    def _source_exited(self, source: ConnectorProcess) -> asyncio.Future[int]:
        """The source's exit code, waited for once: the pump and the final check both need it."""
        if self._source_exit is None:
            self._source_exit = asyncio.ensure_future(source.wait())
            # An error path may leave it unawaited: retrieving its exception keeps asyncio quiet.
            self._source_exit.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._source_exit

    async def _pump(
        self, source: ConnectorProcess, destination: ConnectorProcess, router: SourceRouter
    ) -> None:
        stdin = destination.stdin
        if stdin is None:
            raise InternalError("the destination was started without a stdin")
        try:
            await self._write_statuses(stdin, STREAM_STARTED, self._streams)
            try:
                await pump(source.stdout, stdin, router)
            except FerryError as error:
                self._fail("source", error)
                await source.terminate(TERMINATE_GRACE)
            # A destination gone by now is reported by its exit code, not by this write.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._write_final_statuses(stdin, source)
        except (BrokenPipeError, ConnectionResetError):
            self._fail("destination", ConnectorCrashed("the destination closed its input early"))
            await source.terminate(TERMINATE_GRACE)
        finally:
            with contextlib.suppress(OSError):
                await stdin.close()

    async def _write_final_statuses(self, stdin: ByteWriter, source: ConnectorProcess) -> None:
        """COMPLETE for the streams a successful source left open, else INCOMPLETE."""
        try:
            code: int | None = await asyncio.shield(self._source_exited(source))
        except FerryError:  # raised again where the exit is checked
            code = None
        succeeded = code == 0 and "source" not in self._errors and not self._stop.is_set()
        reported = self._source_statuses
        if succeeded:
            ended = (STREAM_COMPLETE, STREAM_INCOMPLETE)
            left = [s for s in self._streams if reported.get(s) not in ended]
            await self._write_statuses(stdin, STREAM_COMPLETE, left)
        else:
            left = [s for s in self._streams if reported.get(s) != STREAM_COMPLETE]
            await self._write_statuses(stdin, STREAM_INCOMPLETE, left)

    async def _write_statuses(
        self, stdin: ByteWriter, status: str, streams: list[StreamDescriptor]
    ) -> None:
        if streams:
            await stdin.write(stream_status_lines(streams, status, time.time() * 1000))

    async def _read_destination(self, destination: ConnectorProcess) -> None:
        async for block in complete_lines(destination.stdout):
            lines, envelopes = split_envelopes(block)
            confirmed: list[PendingState] = []
            for line, envelope in zip(lines, envelopes, strict=True):
                if envelope.type == STATE:
                    confirmed += self._confirm(decode_state_line(line))
                elif envelope.type == "":
                    self._on_text_from("destination", line.decode("utf-8", "replace"))
                else:
                    self._on_message("destination", decode_message(line))
            if confirmed:
                self._commit(confirmed)

    def _confirm(self, echoed: AirbyteStateMessage) -> list[PendingState]:
        try:
            confirmed = self.ledger.confirm(echoed)
        except ProtocolViolation as error:
            self._fail("destination", error)
            return []
        reported = echoed.destinationStats.recordCount if echoed.destinationStats else None
        last = confirmed[-1]
        if (
            reported is not None
            and last.state.type == STATE_STREAM
            and int(reported) != last.covers_records
        ):
            self.stats.mismatches.append(
                f"destination said {int(reported)} records for state #{last.sequence},"
                f" ferry sent {last.covers_records}"
            )
        return confirmed

    def _commit(self, confirmed: list[PendingState]) -> None:
        self.commit([entry.state for entry in confirmed])
        self.stats.states_committed += len(confirmed)
        for entry in confirmed:
            stream = entry.state.stream
            if entry.state.type == STATE_STREAM and stream is not None:
                descriptor = stream.stream_descriptor
                self.stats.stream(descriptor.name, descriptor.namespace).states_committed += 1

    def _on_source_message(self, message: AirbyteMessage) -> None:
        status = stream_status_of(message)
        if status is not None:
            self._source_statuses[status.stream_descriptor] = status.status
        self._on_message("source", message)

    def _on_text(self, text: str) -> None:
        self._on_text_from("source", text)

    def _on_text_from(self, role: Role, text: str) -> None:
        self._logs[role].text(text)

    def _on_message(self, role: Role, message: AirbyteMessage) -> None:
        error = self._logs[role].message(message)
        if error is not None:
            self._fail(
                role,
                ConnectorFailed(
                    f"{role} reported {error.failure_type or 'an error'}: {error.message}",
                    failure_type=error.failure_type,
                ),
            )
            return
        trace = message.trace
        if trace is not None and trace.stream_status is not None:
            descriptor = trace.stream_status.stream_descriptor
            self.stats.stream(
                descriptor.name, descriptor.namespace
            ).status = trace.stream_status.status

    def _fail(self, role: Role, error: FerryError) -> None:
        self._errors.setdefault(role, error)

    def _check_exit(self, role: Role, code: int, process: ConnectorProcess) -> None:
        if code == 0 or role in self._errors or (self._stop.is_set() and role == "source"):
            return
        self._fail(
            role,
            ConnectorCrashed(
                f"the {role} exited with code {code}",
                exit_code=code,
                stderr_tail="\n".join(process.stderr_tail()),
            ),
        )

    def _outcome(self) -> AttemptOutcome:
        outcome = AttemptOutcome(self.stats, cancelled=self._stop.is_set())
        # The first failure explains the rest (a source stopped because its destination died).
        outcome.error = next(iter(self._errors.values()), None)
        if self.ledger.unconfirmed and outcome.error is None and not outcome.cancelled:
            outcome.error = ProtocolViolation(
                f"the destination exited without confirming {self.ledger.unconfirmed} of "
                f"{self.ledger.sent} states; they were not committed and will be read again"
            )
        outcome.warnings = list(self.stats.mismatches)
        return outcome
