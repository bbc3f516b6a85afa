"""Small JSON files ferry keeps under `$FERRY_HOME/cache/<kind>/` (specs, catalogs).

Only a cache: a file that cannot be read or written costs a connector run, never a command, so
failures are logged and the caller carries on. Directories are 0700, files 0600, and a file is
replaced atomically, so readers see the old entry or the new one, never a part of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ferry.home import ferry_home


def cache_dir(kind: str) -> Path:
    return ferry_home() / "cache" / kind


def read_entry(path: Path, logger: logging.Logger, level: int, what: str) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is absent, unreadable or not an object (logged
    at `level`, naming `what`)."""
    try:
        entry = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.log(level, "ignoring the cached %s %s, which cannot be read: %s", what, path, error)
        return None
    if not isinstance(entry, dict):
        logger.log(level, "ignoring the corrupt cached %s %s: not a JSON object", what, path)
        return None
    return entry


def write_entry(path: Path, entry: dict[str, Any], logger: logging.Logger, what: str) -> None:
    """Write `entry` to `path` (0600, atomically); a failure only costs a connector run later,
    so it is logged."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, json.dumps(entry).encode())
    except OSError as error:
        logger.warning("could not cache the connector's %s in %s: %s", what, path, error)


def write_atomically(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Readers see the old file or the new one, never a part (no fsync: a file lost in a crash
    is only a cache miss, and a truncated one is ignored as corrupt). The file is 0600.
    Without `replace`, an existing file is kept: FileExistsError."""
    fd, temporary = tempfile.mkstemp(prefix=".new-", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
