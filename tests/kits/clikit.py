"""Helpers of the CLI tests (imported by basename: pytest puts tests/kits on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Result:
    """What one `ferry` command did: its exit code and its output."""

    code: int
    out: str
    err: str


Ferry = Callable[..., Result]


class WriteConfig(Protocol):
    """The `write_config` fixture: writes a config file (JSON or YAML text), returns its path."""

    def __call__(self, text: str, suffix: str = ".json") -> str: ...
