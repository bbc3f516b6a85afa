"""What a connector says besides its data, written to ferry's log: one reader for every command.

The one-shot commands (spec, check, discover) and a sync's two connectors hand each line that is
not data here: text lines (not JSON) are the connector's log output, LOG messages are logged at
their level, a TRACE error is logged and handed back to the caller (which decides what it
means), other TRACE messages and the rest go to the debug log (the config of a CONTROL message
is the caller's to keep). Everything lands in the logger `ferry.connector.<name>`.
"""

from __future__ import annotations

import logging

from ferry.errors import DecodeError
from ferry.protocol import decode_message, encode
from ferry.protocol.messages import LOG, TRACE, AirbyteErrorTraceMessage, AirbyteMessage

# Airbyte log levels (any case) to Python's; an unknown level is INFO.
LOG_LEVELS = {
    "FATAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": logging.DEBUG,
}


class ConnectorLog:
    """The log of one connector. `error_level`: how loud its TRACE errors are logged."""

    def __init__(self, name: str, *, error_level: int = logging.INFO) -> None:
        self.log = logging.getLogger(f"ferry.connector.{name}")
        self.error_level = error_level

    def text(self, text: str) -> None:
        """A line of output that is not a message (or a stderr line)."""
        self.log.info("%s", text)

    def line(self, line: bytes) -> AirbyteMessage | None:
        """Decode one stdout line: a message to the caller; text (not JSON) to the log."""
        line = line.strip()
        if not line:
            return None
        try:
            message = decode_message(line) if line.startswith(b"{") else None
        except DecodeError:
            message = None
        if message is None:
            self.text(line.decode("utf-8", "replace"))
        return message

    def message(self, message: AirbyteMessage) -> AirbyteErrorTraceMessage | None:
        """Log a message that is not data; the error a TRACE reports, if it reports one."""
        if message.type == LOG and message.log is not None:
            level = LOG_LEVELS.get(message.log.level.upper(), logging.INFO)
            self.log.log(level, "%s", message.log.message)
            if message.log.stack_trace:
                self.log.debug("%s", message.log.stack_trace)
        elif message.type == TRACE and message.trace is not None:
            error = message.trace.error
            if error is None:
                self.log.debug("trace %s", encode(message.trace).decode())
                return None
            self.log.log(self.error_level, "%s", error.message)
            for detail in (error.internal_message, error.stack_trace):
                if detail:
                    self.log.debug("%s", detail)
            return error
        else:
            self.log.debug("ignored a %s message", message.type)
        return None
