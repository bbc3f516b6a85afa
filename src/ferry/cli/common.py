"""What every command module shares: the subparsers type, masked output, logging, the store.

Command modules expose `register(subparsers)`; each command's parser sets
`handler=<function(args) -> exit code>` with `set_defaults`. Everything a handler prints to
stdout/stderr goes through the secret masker (main wraps both streams), so handlers may `print`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, TypeAlias
from urllib.parse import unquote, urlsplit

from ferry.engine import log_context
from ferry.engine.config import resolve_env
from ferry.engine.secrets import MaskingFilter, mask, masker
from ferry.store import Store, open_store

# A string: argparse's class is not subscriptable at runtime on Python 3.11.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

CONNECTOR_PREFIX = "ferry.connector."
_HANDLER_MARK = "_ferry_cli_handler"


class MaskedStream:
    """A text stream that masks secrets in everything written through it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """Mask secrets in all that is printed to stdout and stderr while the block runs."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = MaskedStream(stdout)
    sys.stderr = MaskedStream(stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr


class LogFormatter(logging.Formatter):
    """`source-faker | line` for connector output, `ferry: warning: ...` for ferry's own."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name.startswith(CONNECTOR_PREFIX):
            prefix = record.name.removeprefix(CONNECTOR_PREFIX)
            return "\n".join(f"{prefix} | {line}" for line in text.splitlines() or [""])
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"ferry: {level}{text}"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record, for log collectors: `--log-format json`.

    Keys: time (UTC, ISO 8601), level, logger, connection, run_id, role (source/destination for
    a sync's connector output, else null), message (and exception when there is one). The
    masking filter runs before the formatter, so message and exception are already masked.
    """

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "ferry_context", None) or log_context.current()
        connector = record.name.removeprefix(CONNECTOR_PREFIX)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "connection": context.connection,
            "run_id": context.run_id,
            "role": connector if connector in ("source", "destination") else None,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def json_log_line(logger: str, message: str, context: log_context.RunContext) -> str:
    """A JSON log line (level info) for output that is not a log record: progress, which is
    printed at any verbosity."""
    record = logging.makeLogRecord(
        {"name": logger, "levelno": logging.INFO, "levelname": "INFO", "msg": message}
    )
    record.ferry_context = context
    return JsonLogFormatter().format(record)


LOG_FORMATS = ("text", "json")


def json_logs(args: argparse.Namespace) -> bool:
    """Whether logs are JSON lines (`--log-format json` or FERRY_LOG_FORMAT, as main resolved)."""
    return getattr(args, "log_format", None) == "json"


def print_error(
    message: str, *, json_lines: bool, context: log_context.RunContext | None = None
) -> None:
    """A failure on stderr: `ferry: error: MESSAGE`, or with JSON logs an error log line naming
    the connection and run of `context`. Masked either way."""
    if json_lines:
        extra = {"ferry_context": context} if context is not None else None
        logging.getLogger("ferry").error("%s", message, extra=extra)
    else:
        print(f"ferry: error: {mask(message)}", file=sys.stderr)


def setup_logging(
    verbosity: int = 0, debug: bool = False, log_format: str = "text"
) -> logging.Handler:
    """Log `ferry` and `ferry.connector.<name>` to stderr, masked, as text or JSON lines.

    Default: warnings and errors; -v adds info (connector log lines); -vv or --debug everything.
    Calling it again replaces the previous handler (main may run many times in one process).
    """
    logger = logging.getLogger("ferry")
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(MaskingFilter())
    json_lines = log_format == "json"
    handler.setFormatter(JsonLogFormatter() if json_lines else LogFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    if debug or verbosity >= 2:
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.INFO if verbosity == 1 else logging.WARNING)
    return handler


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Plain aligned columns (stable in pipes and tests, unlike a width-sensing renderer)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def open_cli_store(args: argparse.Namespace) -> Store:
    """The store of --state-db or $FERRY_STATE_DB; `${NAME}` in the URL comes from the
    environment, and its password is masked in everything ferry prints from now on."""
    url = args.state_db or os.environ.get("FERRY_STATE_DB") or None
    if url is not None:
        typed = _password(url)
        url = str(resolve_env(url, "the state store URL"))
        password = _password(url)
        if password:
            masker.add_all({password, unquote(password)})  # as written, and decoded
        if args.state_db and typed and "${" not in typed:
            logging.getLogger("ferry").warning(
                "the state store's password is on ferry's command line, where `ps` shows it "
                "to every user of this machine: put the URL in FERRY_STATE_DB, or the "
                "password in an environment variable written ${NAME} in the URL"
            )
    return open_store(url)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
