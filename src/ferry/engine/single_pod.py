"""One sync attempt in the single-pod layout, seen from the launching ferry.

The source, the destination and ferry's pump run in one pod (`ferry.runtimes.pods.single_pod`); the
pump runs the same attempt as a local sync inside it (`ferry.engine.pod_pump`). This side follows
the pod's control stream (`ferry.engine.control`) and keeps what must outlive the pod: the ledger
records every state the pump sent, in order, and a state is committed to the store only when the
destination's echo of it arrives, exactly as in the other layouts. Logs, stream statuses,
estimates and failures are handled as if the connectors ran here.

A stop request is passed on to the pump (the source first, then the destination); if the pod
itself fails (a container cannot be pulled, is OOMKilled, the pod is evicted or deleted), the
runtime's error names the container and the attempt fails with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ferry.engine.control import (
    STOP_COMMAND,
    Event,
    apply_stats,
    decode_event,
    decode_state,
    error_of,
    totals_of,
)
from ferry.engine.pump import complete_lines
from ferry.engine.sync import (
    TERMINATE_GRACE,
    Attempt,
    AttemptOutcome,
    AttemptPlan,
    CommitStates,
    KeepConfig,
)
from ferry.errors import ConnectorCrashed, FerryError
from ferry.protocol import decode_message, encode
from ferry.runtimes import start_pair
from ferry.runtimes.base import (
    ConnectorInvocation,
    Role,
    RunLabels,
    Runtime,
)
from ferry.runtimes.options import PodLayout
from ferry.runtimes.pods.layout import PodPair
from ferry.runtimes.relayed import PodProcess

logger = logging.getLogger("ferry.pump")

_ROLES: dict[str | None, Role] = {"source": "source", "destination": "destination"}


class SinglePodAttempt(Attempt):
    """Runs one attempt as a single pod; same interface and outcome as `Attempt`."""

    def __init__(
        self,
        plan: AttemptPlan,
        runtimes: dict[str, Runtime],
        state_file: bytes | None,
        commit: CommitStates,
        layout: PodLayout,
        *,
        number: int = 1,
        keep_config: KeepConfig | None = None,
    ) -> None:
        super().__init__(plan, runtimes, state_file, commit, number=number, keep_config=keep_config)
        self.layout = layout
        self._pod: PodProcess | None = None
        self._ended = False
        self._stops: set[asyncio.Future[None]] = set()

    def request_stop(self) -> None:
        """Each request is passed to the pump: the first stops the source, the second the
        destination."""
        self._stop.set()
        if self._pod is not None and self._pod.stdin is not None:
            self._stops.add(asyncio.ensure_future(self._send_stop(self._pod)))

    async def _send_stop(self, pod: PodProcess) -> None:
        assert pod.stdin is not None
        with contextlib.suppress(FerryError, OSError):
            await pod.stdin.write(STOP_COMMAND)

    def pair(self) -> PodPair:
        catalog = encode(self.plan.catalog)
        source_files = {"config": self.plan.source_config, "catalog": catalog}
        if self.state_file is not None:
            source_files["state"] = self.state_file
        run, connection = self.plan.labels.run_id, self.plan.labels.connection
        return PodPair(
            source=ConnectorInvocation(
                self.plan.source, "read", source_files, RunLabels(run, connection, "source")
            ),
            destination=ConnectorInvocation(
                self.plan.destination,
                "write",
                {"config": self.plan.destination_config, "catalog": catalog},
                RunLabels(run, connection, "destination"),
            ),
            layout=self.layout,
            labels=RunLabels(run, connection, "connector"),
        )

    async def run(self) -> AttemptOutcome:
        runtime = self.runtimes[self.plan.source.runtime]
        log = lambda line: logger.info("%s", line)  # noqa: E731 - the pump's own log
        pod = self._pod = await start_pair(runtime, self.pair(), log)
        if self._stop.is_set():
            await self._send_stop(pod)
        try:
            await self._follow(pod)
        finally:
            if self._ended and not self._errors:
                await pod.discard()  # nothing left to learn from the pod: remove it at once
            else:
                await pod.terminate(TERMINATE_GRACE)
            logger.debug("single pod: removed")
        return self._outcome()

    async def _follow(self, pod: PodProcess) -> None:
        try:
            async for block in complete_lines(pod.stdout):
                for line in block.splitlines():
                    self._on_event(decode_event(line))
            if self._ended and not self._errors:
                return  # the pump ended the sync cleanly; a failed one's pod may say more
            code = await pod.wait()
        except FerryError as error:  # the pod failed: its reason names the container
            self._errors = {"connector": error, **self._errors}
            return
        if not self._ended:
            self._fail(
                "connector",
                ConnectorCrashed(
                    f"the pump container exited with code {code} before the sync ended",
                    exit_code=code,
                    stderr_tail="\n".join(pod.stderr_tail()),
                ),
            )

    def _on_event(self, event: Event) -> None:
        role = _ROLES.get(event.role, "connector")
        kind = event.event
        if kind == "state":
            self.ledger.record_sent(decode_state(event.state), event.counted or 0, totals_of(event))
        elif kind == "echo":
            confirmed = self._confirm(decode_state(event.state))
            if confirmed:
                self._commit(confirmed)
        elif kind == "message" and event.message:
            self._on_message(role, decode_message(bytes(event.message)))
        elif kind == "text":
            self._on_text_from(role, event.text or "")
        elif kind == "stats":
            apply_stats(event, self.stats)
        elif kind == "error":
            self._fail(role, error_of(event))
        elif kind == "end":
            logger.debug("single pod: the pump's end event")
            self._ended = True
        else:
            logger.debug("ignored a control event %r", kind)
