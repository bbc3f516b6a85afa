"""The pump container of a single pod: ferry's own routing between the connectors' FIFOs.

    python -m ferry.engine.pod_pump        (the command of the `pump` container, FERRY_IMAGE)

The source and destination containers run their images under ferry's wrapper with their stdio on
FIFOs in `<FERRY_PUMP_DIR>/source` and `<FERRY_PUMP_DIR>/destination` (one emptyDir). This program
runs the very same attempt as a local sync (`ferry.engine.sync.Attempt`: SourceRouter, stream
statuses, exit checks) on those FIFOs, and sends everything the launching ferry must know as the
control stream (`ferry.engine.control`) over ferry's relay port: the `stdout` channel carries the
events, `stdin` the launching ferry's commands, `stderr` this program's own log. States are
committed by the launching ferry alone, on the echoes it receives.

When the heartbeat sidecar writes the termination marker into FERRY_PUMP_DIR (the launching
ferry is gone), or this container gets SIGTERM, both connectors are stopped. The exit code goes
to `<FERRY_PUMP_DIR>/exit` for the heartbeat sidecar to report: 0 once the end event was sent.

Settings (environment): FERRY_PUMP_DIR, FERRY_PUMP_CATALOG (the configured catalog file),
FERRY_PUMP_RELAY (`host:port`), FERRY_PUMP_TOKEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections import deque
from pathlib import Path

import msgspec

from ferry.engine.control import (
    STOP_COMMAND,
    Event,
    Totals,
    encode_event,
    error_events,
    state_event,
    stats_event,
)
from ferry.engine.ledger import PendingState, StateLedger
from ferry.engine.pump import complete_lines
from ferry.engine.sync import Attempt, AttemptPlan
from ferry.errors import FerryError, ProtocolViolation
from ferry.protocol import encode
from ferry.protocol.messages import (
    AirbyteMessage,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
)
from ferry.relay import EXIT_FILE, TERMINATE_FILE, handshake_line
from ferry.runtimes.base import ConnectorProcess, ConnectorRef, Role, RunLabels
from ferry.runtimes.fifo import FifoProcess, prepare_fifos

logger = logging.getLogger("ferry.pump")

STATS_INTERVAL = 1.0
MARKER_POLL = 0.25
# glibc's mallopt parameters, and what the pump sets them to (see keep_heap)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20


class ControlChannel:
    """Events to the launching ferry, in order, over one socket; `send` never blocks."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.lost = asyncio.Event()  # the launching ferry is gone
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._flush())

    def send(self, event: Event) -> None:
        self._queue.append(encode_event(event))
        self._ready.set()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue and not self.lost.is_set():
                batch = b"".join(self._queue)
                self._queue.clear()
                try:
                    await loop.sock_sendall(self._sock, batch)
                except OSError as e:
                    logger.error("the control connection to ferry broke (%s): stopping", e)
                    self.lost.set()
            if self._closed:
                return

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        await self._task
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)


class ForwardingLedger(StateLedger):
    """The pod's ledger: every state recorded as sent also goes to the launching ferry."""

    def __init__(self, control: ControlChannel) -> None:
        super().__init__()
        self._control = control

    def record_sent(
        self, state: AirbyteStateMessage, covers_records: int, totals: Totals | None = None
    ) -> PendingState:
        self._control.send(state_event("state", encode(state), covers_records, totals))
        return super().record_sent(state, covers_records, totals)


class PodAttempt(Attempt):
    """The attempt inside the pod: connectors on FIFOs, everything reported on the control
    stream, nothing logged or committed here."""

    def __init__(self, plan: AttemptPlan, directory: Path, control: ControlChannel) -> None:
        super().__init__(plan, {}, None, lambda states: None)
        self.directory = directory
        self.control = control
        self.ledger = ForwardingLedger(control)

    async def _start(
        self, ref: ConnectorRef, role: Role, files: dict[str, bytes]
    ) -> ConnectorProcess:
        await prepare_fifos(self.directory / role, role == "destination")
        return FifoProcess(
            self.directory / role,
            reads_stdin=role == "destination",
            log=lambda line: self._on_text_from(role, line),
            name=f"the {role}",
        )

    def _confirm(self, echoed: AirbyteStateMessage) -> list[PendingState]:
        self.control.send(stats_event(self.stats))
        self.control.send(state_event("echo", encode(echoed)))
        with contextlib.suppress(ProtocolViolation):  # the launching ferry reports it
            self.ledger.confirm(echoed)
        return []

    def _on_message(self, role: Role, message: AirbyteMessage) -> None:
        self.control.send(Event("message", role=role, message=msgspec.Raw(encode(message))))
        trace = message.trace
        if trace is not None and trace.error is not None:
            super()._on_message(role, message)  # the failure decides the final statuses

    def _on_text_from(self, role: Role, text: str) -> None:
        self.control.send(Event("text", role=role, text=text))

    def failures(self) -> list[tuple[Role, FerryError]]:
        return list(self._errors.items())

    async def report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self.control.send(stats_event(self.stats))


async def _connect(relay: str, token: str, channel: str) -> socket.socket:
    host, _, port = relay.rpartition(":")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    address = (await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM))[0][4]
    await loop.sock_connect(sock, address)
    await loop.sock_sendall(sock, handshake_line(token, channel))
    return sock


async def _commands(sock: socket.socket, attempt: PodAttempt) -> None:
    """Each stop command is one `request_stop`: the source first, then the destination."""
    reader = _SocketReader(sock)
    async for block in complete_lines(reader):
        for _ in range(block.count(STOP_COMMAND)):
            attempt.request_stop()


class _SocketReader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def read(self, n: int) -> bytes:
        try:
            return await asyncio.get_running_loop().sock_recv(self._sock, n)
        except OSError:
            return b""


async def _watch_marker(directory: Path, attempt: PodAttempt) -> None:
    """The heartbeat's termination marker or a broken control connection (the launching ferry
    is gone): stop both connectors."""
    marker = directory / TERMINATE_FILE
    while not marker.exists() and not attempt.control.lost.is_set():  # noqa: ASYNC110 - a file
        await asyncio.sleep(MARKER_POLL)
    _stop_both(attempt)


def _stop_both(attempt: PodAttempt) -> None:
    for role in ("source", "destination"):
        with contextlib.suppress(OSError):
            (attempt.directory / role / TERMINATE_FILE).write_text("the pod is stopping\n")
    attempt.request_stop()


async def run_pump(
    directory: Path, catalog: ConfiguredAirbyteCatalog, relay: str, token: str
) -> int:
    stderr_sock = await _connect(relay, token, "stderr")
    os.dup2(stderr_sock.fileno(), 2)  # this program's log and tracebacks reach ferry's log
    control = ControlChannel(await _connect(relay, token, "stdout"))
    commands_sock = await _connect(relay, token, "stdin")
    placeholder = ConnectorRef("pod", "")
    plan = AttemptPlan(placeholder, placeholder, b"", b"", catalog, RunLabels())
    attempt = PodAttempt(plan, directory, control)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, _stop_both, attempt)
    helpers = [
        asyncio.create_task(_commands(commands_sock, attempt)),
        asyncio.create_task(_watch_marker(directory, attempt)),
        asyncio.create_task(attempt.report_stats()),
    ]
    try:
        outcome = await attempt.run()
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    control.send(stats_event(attempt.stats))
    for event in error_events(attempt.failures()):
        control.send(event)
    control.send(Event("end", cancelled=outcome.cancelled))
    await control.close()
    return 0


def keep_heap() -> None:
    """Keep freed chunk buffers in the heap instead of handing them back to the kernel.

    The pump moves the data on the main thread, whose glibc arena shrinks the heap (brk) as soon
    as a large chunk at its top is freed, and grows it again for the next read: about 20 brk
    calls per MB, each new page faulted and zeroed, 1.4x the CPU per MB of a local sync (whose
    pump runs in a thread arena, which does not shrink). A fixed mmap threshold of 32 MiB and
    trim threshold of 256 MiB keep them; the pump's own memory stays a few chunks. Not glibc
    (no mallopt): nothing to do."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def main() -> int:
    keep_heap()
    logging.basicConfig(level=logging.INFO, format="ferry-pump: %(message)s", stream=sys.stderr)
    # The connectors' messages and text go to the launching ferry as events, which logs them.
    connectors = logging.getLogger("ferry.connector")
    connectors.addHandler(logging.NullHandler())
    connectors.propagate = False
    directory = Path(os.environ["FERRY_PUMP_DIR"])
    catalog_bytes = Path(os.environ["FERRY_PUMP_CATALOG"]).read_bytes()
    catalog = msgspec.json.decode(catalog_bytes, type=ConfiguredAirbyteCatalog)
    code = 1
    try:
        code = asyncio.run(
            run_pump(
                directory, catalog, os.environ["FERRY_PUMP_RELAY"], os.environ["FERRY_PUMP_TOKEN"]
            )
        )
    finally:
        (directory / f"{EXIT_FILE}.tmp").write_text(f"{code}\n")
        (directory / f"{EXIT_FILE}.tmp").rename(directory / EXIT_FILE)
    return code


if __name__ == "__main__":
    sys.exit(main())
