"""Which connection and run the log lines of a sync belong to (for `--log-format json`).

A context variable rather than logger adapters: connector output, the pump and the runtimes log
through plain module loggers, and every task a sync starts inherits the variable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RunContext:
    connection: str | None = None
    run_id: int | None = None


_NONE = RunContext()
_current: ContextVar[RunContext | None] = ContextVar("ferry_run_context", default=None)


def current() -> RunContext:
    return _current.get() or _NONE


@contextlib.contextmanager
def running(connection: str, run_id: int | None = None) -> Iterator[None]:
    """Log lines in this block (and in tasks it starts) name this connection and run."""
    token = _current.set(RunContext(connection, run_id))
    try:
        yield
    finally:
        _current.reset(token)
