"""Helpers of the CLI tests (imported by basename, as pytest puts this directory on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """What one `ferry` command did: its exit code and its output."""

    code: int
    out: str
    err: str


Ferry = Callable[..., Result]
