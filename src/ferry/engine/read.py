"""Reading a source without a destination: what `ferry.read` explores.

The source runs as in a sync (same runtimes, same validated config, a configured catalog, an
optional state) and its stdout is read in blocks of whole lines, so memory stays bounded however
much it emits. RECORD, STATE and STREAM_STATUS lines are handed on as their original bytes;
LOG, other TRACE lines and text go to ferry's log like `ferry check`'s. A TRACE error or a
failed exit raises the error the one-shot commands raise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.engine import commands
from ferry.engine.pump import complete_lines, split_envelopes
from ferry.errors import ConfigError, DecodeError
from ferry.protocol import StreamSelection, configure_catalog, decode_message, encode
from ferry.protocol.messages import (
    RECORD,
    STATE,
    TRACE,
    ConfiguredAirbyteCatalog,
)
from ferry.protocol.stream_status import stream_status_of
from ferry.runtimes import get_runtime
from ferry.runtimes.base import ConnectorInvocation, ConnectorRef, Runtime

TERMINATE_GRACE = 5.0


@dataclass(frozen=True)
class ReadPlan:
    """A validated config and the configured catalog a read runs with."""

    ref: ConnectorRef
    config: bytes
    catalog: ConfiguredAirbyteCatalog
    state: bytes | None


async def plan_read(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    *,
    streams: Sequence[str] | None = None,
    state: Sequence[Mapping[str, Any]] | None = None,
    runtime: Runtime | None = None,
) -> ReadPlan:
    """Validate `config`, discover, and configure `streams` (NAME or NAMESPACE.NAME; all if None).

    Without a state every stream is read in full (full_refresh where the stream allows it);
    with one, streams read incrementally from it where they can.
    """
    running = runtime or get_runtime(ref.runtime)
    try:
        spec = await commands.cached_spec(ref, running)
        catalog = await commands.discover(ref, config, running, spec=spec)
    finally:
        if runtime is None:
            await running.close()
    selections = None if streams is None else [_selection(name) for name in streams]
    configured = configure_catalog(catalog, selections, full_refresh=state is None)
    state_file = None if state is None else json.dumps(list(state)).encode()
    return ReadPlan(ref, json.dumps(dict(config)).encode(), configured, state_file)


def _selection(text: str) -> StreamSelection:
    namespace, _, name = text.rpartition(".")
    if not name:
        raise ConfigError(f"stream {text!r} is not NAME or NAMESPACE.NAME")
    return StreamSelection(name=name, namespace=namespace or None)


async def read_lines(plan: ReadPlan, runtime: Runtime | None = None) -> AsyncIterator[list[bytes]]:
    """The source's RECORD, STATE and STREAM_STATUS lines (no newline), a block at a time.

    Closing the iterator early stops the source.
    """
    own = runtime is None
    running = runtime or get_runtime(plan.ref.runtime)
    output = commands.CommandOutput(commands.connector_name(plan.ref), expected=RECORD)
    files = {"config": plan.config, "catalog": encode(plan.catalog)}
    if plan.state is not None:
        files["state"] = plan.state
    try:
        process = await running.start(
            ConnectorInvocation(plan.ref, "read", files), output.stderr_line
        )
        try:
            async for block in complete_lines(process.stdout):
                lines, envelopes = split_envelopes(block)
                del block
                kept = []
                for line, envelope in zip(lines, envelopes, strict=True):
                    if envelope.type in (RECORD, STATE) or _is_stream_status(envelope.type, line):
                        kept.append(line)
                    elif (message := output.connector_log.line(line)) is not None:
                        output.message(message)  # LOG, TRACE: to the log; a TRACE error is kept
                if kept:
                    yield kept
            output.raise_for_failure(await process.wait(), process.stderr_tail())
        finally:
            await process.terminate(TERMINATE_GRACE)
    finally:
        if own:
            await running.close()


def _is_stream_status(kind: str, line: bytes) -> bool:
    if kind != TRACE:
        return False
    try:
        return stream_status_of(decode_message(line)) is not None
    except DecodeError:
        return False
