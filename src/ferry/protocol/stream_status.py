"""STREAM_STATUS traces: recognising them, and writing the COMPLETEs ferry sends a destination.

As Airbyte's platform, ferry sends a destination only COMPLETE, once per stream after a
successful source: then an overwrite may replace the old table. EOF without it means the stream
did not end (the destination keeps the old table).
"""

from __future__ import annotations

from collections.abc import Iterable

from ferry.protocol.decode import encode
from ferry.protocol.messages import (
    TRACE,
    TRACE_STREAM_STATUS,
    AirbyteMessage,
    AirbyteStreamStatusTraceMessage,
    AirbyteTraceMessage,
    StreamDescriptor,
)


def stream_status_of(message: AirbyteMessage) -> AirbyteStreamStatusTraceMessage | None:
    """The stream status a message carries, or None if it is not a STREAM_STATUS trace."""
    trace = message.trace
    if message.type != TRACE or trace is None or trace.type != TRACE_STREAM_STATUS:
        return None
    return trace.stream_status


def stream_status_lines(
    streams: Iterable[StreamDescriptor], status: str, emitted_at: float
) -> bytes:
    """One STREAM_STATUS trace line (newline-terminated) per stream, all with `status`."""
    lines = []
    for stream in streams:
        trace = AirbyteTraceMessage(
            type=TRACE_STREAM_STATUS,
            emitted_at=emitted_at,
            stream_status=AirbyteStreamStatusTraceMessage(stream_descriptor=stream, status=status),
        )
        lines.append(encode(AirbyteMessage(type=TRACE, trace=trace)) + b"\n")
    return b"".join(lines)
