"""Where ferry keeps its own files: installed connectors, the default store, caches, and the
private files of running connectors (`run/`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def ferry_home() -> Path:
    """$FERRY_HOME, or ~/.ferry."""
    home = os.environ.get("FERRY_HOME") or "~/.ferry"
    return Path(home).expanduser().absolute()


def run_dir() -> Path:
    """$FERRY_HOME/run (0700): connector configs (secrets) and other files of running
    processes. Each entry is named `<pid>-<start time>-...` after the process that made it, so
    entries whose process is gone are swept (store.owner.sweep_run_dir)."""
    path = ferry_home() / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def make_run_dir(kind: str) -> Path:
    """A fresh private (0700) directory under run_dir(), owned by this process."""
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{pid}-{process_start(pid) or 0}-{kind}-", dir=run_dir()))


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot) as text; None if unknown."""
    stat = process_stat(pid)
    if stat is None:
        return None
    fields = stat.split()
    # Fields after the command name: state is 3rd overall, starttime the 22nd.
    return fields[19] if len(fields) > 19 else None


def process_stat(pid: int) -> str | None:
    """/proc/PID/stat from its state field on (after the command name), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses itself.
    return text[text.rfind(")") + 2 :]
