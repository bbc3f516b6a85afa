"""One sync attempt: start the destination's write and the source's read, pump, commit states.

What the destination receives is what Airbyte's platform sends it: the source's RECORD and
STATE lines (see `pump`); then, only when the source has exited 0 without a TRACE ERROR, was not
stopped and all its output was pumped, one STREAM_STATUS COMPLETE per configured stream; then
EOF. Never STARTED, RUNNING or INCOMPLETE (destinations on the Kotlin bulk CDK exit on
INCOMPLETE): a destination that sees EOF without a stream's COMPLETE knows that stream did not
end, and keeps what an overwrite would have replaced. The source's own statuses go to the stats
and the log only.

Failure semantics:
- the source fails → the destination's stdin is closed so it flushes and echoes what it has;
  those commits are kept and the attempt fails;
- the destination fails or exits early → the source is stopped; nothing beyond its last echo
  is committed;
- a stop request (SIGINT/SIGTERM) → the source is stopped, the destination drains as above;
  a second request, or STOP_GRACE seconds without the destination finishing, stops it too. The
  attempt then ends cancelled, whatever the connectors did meanwhile;
- a side idle for longer than its timeout (the source sends nothing while ferry waits for it;
  the destination neither reads nor writes anything while ferry waits for it) → that side is
  stopped and the attempt fails with IdleTimeout, retried like a crash.

A connector's error names its exit code and the tail of its stderr, whichever way ferry first
noticed that it was gone (a broken pipe, its output ending early, its exit): those first signs
are only symptoms, replaced by what its exit says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry.engine.connection import IdleTimeouts
from ferry.engine.connector_config import updated_config
from ferry.engine.connector_log import ConnectorLog
from ferry.engine.ledger import PendingState, StateLedger, decode_state_line
from ferry.engine.pump import SourceRouter, complete_lines, pump, split_envelopes
from ferry.engine.secrets import mask
from ferry.engine.stats import SyncStats
from ferry.errors import (
    ConnectorCrashed,
    ConnectorFailed,
    FerryError,
    IdleTimeout,
    InternalError,
    ProtocolViolation,
)
from ferry.protocol import decode_message, encode
from ferry.protocol.messages import (
    STATE,
    STATE_GLOBAL,
    STATE_STREAM,
    STREAM_COMPLETE,
    AirbyteMessage,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
    StateStats,
    StreamDescriptor,
)
from ferry.protocol.stream_status import stream_status_lines
from ferry.runtimes.base import (
    ByteReader,
    ByteWriter,
    ConnectorInvocation,
    ConnectorProcess,
    ConnectorRef,
    Role,
    RunLabels,
    Runtime,
    Verb,
)
from ferry.store.state import streams_touched

logger = logging.getLogger("ferry.sync")

TERMINATE_GRACE = 10.0
# After a first stop request, how long the destination may take to flush and echo what it has.
STOP_GRACE = 60.0
# A forced stop (a second request) gives connectors this long to exit on SIGTERM.
FORCED_GRACE = 2.0
CommitStates = Callable[[Sequence[AirbyteStateMessage]], None]
# Keeps the config a connector sent in a CONTROL message; returns before the next line is read.
KeepConfig = Callable[[Role, dict[str, Any]], None]


@dataclass(frozen=True)
class AttemptPlan:
    """Everything one attempt needs; the same plan is reused by retries with a fresh state."""

    source: ConnectorRef
    destination: ConnectorRef
    source_config: bytes
    destination_config: bytes
    catalog: ConfiguredAirbyteCatalog
    labels: RunLabels
    timeouts: IdleTimeouts = field(default_factory=IdleTimeouts)


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
        *,
        number: int = 1,
        keep_config: KeepConfig | None = None,
    ) -> None:
        self.plan = plan
        self.runtimes = runtimes
        self.state_file = state_file
        self.commit = commit
        self.number = number
        self.keep_config = keep_config
        self.stats = SyncStats()
        for configured in plan.catalog.streams:
            self.stats.stream(configured.stream.name, configured.stream.namespace)
        self.ledger = StateLedger()
        self._streams = [
            StreamDescriptor(c.stream.name, c.stream.namespace) for c in plan.catalog.streams
        ]
        self._source_exit: asyncio.Future[int] | None = None
        self._errors: dict[Role, FerryError] = {}
        self._symptoms: set[Role] = set()  # whose error is a symptom its exit code explains
        self._stop = asyncio.Event()
        self._processes: list[ConnectorProcess] = []
        self._forced_stop: asyncio.Future[list[None]] | None = None
        self._logs = {
            role: ConnectorLog(role, error_level=logging.ERROR)
            for role in ("source", "destination")
        }
        self._stop_timer: asyncio.TimerHandle | None = None
        self._idle = _IdleClocks()

    def request_stop(self) -> None:
        """First call: stop the source and let the destination drain (for STOP_GRACE seconds at
        most); second call: stop both."""
        if self._stop.is_set():
            self._force_stop()
        else:
            logger.warning(
                "stopping: the source is stopped and the destination gets %.0fs to save what it"
                " has; stop again to end it now",
                STOP_GRACE,
            )
            self._stop_timer = asyncio.get_running_loop().call_later(STOP_GRACE, self._force_stop)
        self._stop.set()

    def _force_stop(self) -> None:
        if self._forced_stop is None and self._processes:
            logger.warning("stopping the connectors without waiting for the destination")
            self._forced_stop = asyncio.ensure_future(
                asyncio.gather(*(p.terminate(FORCED_GRACE) for p in self._processes))
            )

    async def run(self) -> AttemptOutcome:
        destination, source = await self._start_both()
        self._processes = [source, destination]
        try:
            await self._drive(source, destination)
        finally:
            if self._stop_timer is not None:
                self._stop_timer.cancel()
            await asyncio.gather(
                source.terminate(TERMINATE_GRACE), destination.terminate(TERMINATE_GRACE)
            )
            if self._forced_stop is not None:
                await asyncio.gather(self._forced_stop, return_exceptions=True)
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
        invocation = ConnectorInvocation(
            ref, verb, files, labels, job_id=labels.run_id, attempt=self.number
        )
        return await self.runtimes[ref.runtime].start(invocation, self._logs[role].text)

    async def _drive(self, source: ConnectorProcess, destination: ConnectorProcess) -> None:
        router = SourceRouter(self.stats, self.ledger, self._on_source_message, self._on_text)
        pumping = asyncio.create_task(self._pump(source, destination, router))
        echoing = asyncio.create_task(self._read_destination(destination))
        stopping = asyncio.create_task(self._stop.wait())
        watching = asyncio.create_task(self._watch_idle(source, destination))
        try:
            await asyncio.wait({pumping, echoing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not pumping.done():
                # A stop request, or the destination closed its output before the source ended.
                if not self._stop.is_set():
                    self._fail("destination", _early_exit(), symptom=True)
                await source.terminate(TERMINATE_GRACE)
            await pumping
            await echoing
        finally:
            for task in (pumping, echoing, stopping, watching):
                task.cancel()
            await asyncio.gather(pumping, echoing, stopping, watching, return_exceptions=True)
        self._check_exit("source", await self._source_exited(source), source)
        self._check_exit("destination", await destination.wait(), destination)

    async def _watch_idle(self, source: ConnectorProcess, destination: ConnectorProcess) -> None:
        """Stop the side ferry has waited on without a sign of life for longer than its
        timeout; the attempt fails with IdleTimeout (retried like a crash)."""
        timeouts = self.plan.timeouts
        tick = min(timeouts.source, timeouts.destination, 20.0) / 4
        while True:
            await asyncio.sleep(tick)
            silent = self._idle.silent_for(timeouts)
            if silent is None:
                continue
            role, seconds = silent
            limit = f"timeouts.{role}_idle {_duration(getattr(timeouts, role))}"
            if role == "source":
                what = "the source sent nothing"
            else:
                what = "the destination neither read its input nor wrote anything"
            message = f"{what} for {_duration(seconds)} ({limit}); it was stopped"
            self._fail(role, IdleTimeout(message))
            logger.warning("%s", message)
            await (source if role == "source" else destination).terminate(TERMINATE_GRACE)
            if role == "destination":
                await source.terminate(TERMINATE_GRACE)
            return

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
        if destination.stdin is None:
            raise InternalError("the destination was started without a stdin")
        stdin = _TimedWriter(destination.stdin, self._idle)
        try:
            try:
                await pump(_TimedReader(source.stdout, self._idle), stdin, router)
            except FerryError as error:
                self._fail("source", error)
                await source.terminate(TERMINATE_GRACE)
            # A destination gone by now is reported by its exit code, not by this write.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._write_completions(stdin, source)
        except (BrokenPipeError, ConnectionResetError):
            self._fail("destination", _early_exit(), symptom=True)
            await source.terminate(TERMINATE_GRACE)
        finally:
            with contextlib.suppress(OSError):
                await stdin.close()

    async def _write_completions(self, stdin: ByteWriter, source: ConnectorProcess) -> None:
        """COMPLETE for every configured stream after a successful source; else nothing."""
        try:
            code: int | None = await asyncio.shield(self._source_exited(source))
        except FerryError:  # raised again where the exit is checked
            code = None
        if code == 0 and "source" not in self._errors and not self._stop.is_set():
            await stdin.write(
                stream_status_lines(self._streams, STREAM_COMPLETE, time.time() * 1000)
            )

    async def _read_destination(self, destination: ConnectorProcess) -> None:
        async for block in complete_lines(destination.stdout):
            self._idle.destination_alive()
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
                await self._commit_in_thread(confirmed)
        self._idle.destination_done()

    def _confirm(self, echoed: AirbyteStateMessage) -> list[PendingState]:
        try:
            confirmed = self.ledger.confirm(echoed)
        except ProtocolViolation as error:
            self._fail("destination", error)
            return []
        self._reconcile(echoed.destinationStats, confirmed[-1])
        return confirmed

    def _reconcile(self, reported: StateStats | None, last: PendingState) -> None:
        """Rejected records go to their stream's stats; written + rejected must be what ferry
        sent for the state (STREAM and GLOBAL states, as the platform checks them)."""
        if reported is None or last.state.type not in (STATE_STREAM, STATE_GLOBAL):
            return
        rejected = int(reported.rejectedRecordCount or 0)
        if rejected:
            touched = streams_touched(last.state)
            if len(touched) == 1:
                self.stats.stream(
                    touched[0].name, touched[0].namespace
                ).records_rejected += rejected
            else:  # a GLOBAL state's count is not split by stream
                self.stats.records_rejected_unattributed += rejected
        if reported.recordCount is None:
            return
        written = int(reported.recordCount)
        if written + rejected != last.covers_records:
            also = f" (+{rejected} rejected)" if rejected else ""
            self.stats.mismatches.append(
                f"destination said {written} records{also} for state #{last.sequence},"
                f" ferry sent {last.covers_records}"
            )

    async def _commit_in_thread(self, confirmed: list[PendingState]) -> None:
        """`_commit`, the store's part in a thread: the pump goes on while the store waits on
        its server or disk; the echoes wait, so commits keep their order. A cancellation
        waits for the commit to end, so that the stats say what the store holds."""
        states = [entry.state for entry in confirmed]
        committing = asyncio.ensure_future(asyncio.to_thread(self.commit, states))
        try:
            await asyncio.shield(committing)
        except asyncio.CancelledError:
            await asyncio.wait([committing])
            if committing.exception() is None:
                self._committed(confirmed)
            raise
        self._committed(confirmed)

    def _commit(self, confirmed: list[PendingState]) -> None:
        self.commit([entry.state for entry in confirmed])
        self._committed(confirmed)

    def _committed(self, confirmed: list[PendingState]) -> None:
        self.stats.states_committed += len(confirmed)
        for entry in confirmed:
            stream = entry.state.stream
            if entry.state.type == STATE_STREAM and stream is not None:
                descriptor = stream.stream_descriptor
                self.stats.stream(descriptor.name, descriptor.namespace).states_committed += 1
            for (name, namespace), (records, size) in entry.totals.items():
                counts = self.stats.stream(name, namespace)
                counts.records_committed, counts.bytes_committed = records, size

    def _on_source_message(self, message: AirbyteMessage) -> None:
        self._on_message("source", message)

    def _on_text(self, text: str) -> None:
        self._on_text_from("source", text)

    def _on_text_from(self, role: Role, text: str) -> None:
        self._logs[role].text(text)

    def _on_message(self, role: Role, message: AirbyteMessage) -> None:
        config = updated_config(message)
        if config is not None and self.keep_config is not None:
            self.keep_config(role, config)
            return
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

    def _fail(self, role: Role, error: FerryError, *, symptom: bool = False) -> None:
        """The first error of each side is kept; a symptom (a broken pipe, output ending early)
        is replaced by what the side's exit code says once it is known."""
        if role not in self._errors:
            self._errors[role] = error
            if symptom:
                self._symptoms.add(role)

    def _check_exit(self, role: Role, code: int, process: ConnectorProcess) -> None:
        symptom = role in self._symptoms
        if role in self._errors and not symptom:
            return
        if not symptom and (code == 0 or (self._stop.is_set() and role == "source")):
            return
        what = f"the {role} exited with code {code}"
        if code == 0:
            what += " before reading all its input"
        tail = mask("\n".join(process.stderr_tail()))
        # Replacing the symptom keeps its place: the first failure explains the others.
        self._errors[role] = ConnectorCrashed(what, exit_code=code, stderr_tail=tail)
        self._symptoms.discard(role)

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


def _early_exit() -> ConnectorCrashed:
    """What ferry sees first when the destination is gone; its exit code then tells why."""
    return ConnectorCrashed("the destination stopped reading before the source finished")


class _IdleClocks:
    """Since when ferry has waited on each side without a sign of life (None: not waiting).

    The source is waited on while a read of its output is pending; the destination while a
    write to it is pending, and after its input was closed until its output ends. Bytes on the
    destination's output (echoed states, logs) count as a sign of life too: a destination that
    echoes while it does not read is busy, not hung."""

    def __init__(self) -> None:
        self.source: float | None = None
        self.destination: float | None = None
        self._destination_finishing = False

    def silent_for(self, timeouts: IdleTimeouts) -> tuple[Role, float] | None:
        now = time.monotonic()
        for role, since, limit in (
            ("source", self.source, timeouts.source),
            ("destination", self.destination, timeouts.destination),
        ):
            if since is not None and now - since > limit:
                return role, now - since  # type: ignore[return-value]
        return None

    def destination_alive(self) -> None:
        if self.destination is not None:
            self.destination = time.monotonic()

    def destination_waited(self) -> None:
        if self.destination is None:
            self.destination = time.monotonic()

    def destination_read(self) -> None:
        self.destination = time.monotonic() if self._destination_finishing else None

    def destination_finishing(self) -> None:
        self._destination_finishing = True
        self.destination = time.monotonic()

    def destination_done(self) -> None:
        self._destination_finishing = False
        self.destination = None


class _TimedReader:
    """The source's output, with the idle clock running while a read waits."""

    def __init__(self, reader: ByteReader, clocks: _IdleClocks) -> None:
        self._reader = reader
        self._clocks = clocks

    async def read(self, n: int) -> bytes:
        self._clocks.source = time.monotonic()
        try:
            return await self._reader.read(n)
        finally:
            self._clocks.source = None


class _TimedWriter:
    """The destination's input, with the idle clock running while a write waits and after
    the input is closed (until the destination's output ends)."""

    def __init__(self, writer: ByteWriter, clocks: _IdleClocks) -> None:
        self._writer = writer
        self._clocks = clocks

    async def write(self, data: bytes) -> None:
        self._clocks.destination_waited()
        await self._writer.write(data)
        self._clocks.destination_read()

    async def close(self) -> None:
        await self._writer.close()
        self._clocks.destination_finishing()


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.1f}s"
