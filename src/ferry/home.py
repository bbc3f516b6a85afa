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
    start = process_start_text(pid) or 0
    return Path(tempfile.mkdtemp(prefix=f"{pid}-{start}-{kind}-", dir=run_dir()))


def process_start(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot (what tells a pid's owner from a
    later process given the same pid); None if there is no such process.

    A zombie (dead, not yet reaped) counts as gone. Without procfs the start time is unknown (0).
    """
    stat = process_stat(pid)
    if stat is None:
        return None if os.path.isdir("/proc/self") else _alive_without_proc(pid)
    fields = stat.split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])  # field 22 of the whole line: starttime
    except (IndexError, ValueError):
        return 0


def process_start_text(pid: int) -> str | None:
    """`process_start` as text, as run owners are stored; None when gone or unknown."""
    start = process_start(pid)
    return str(start) if start else None


def _alive_without_proc(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, owned by another user
    return 0


def process_stat(pid: int) -> str | None:
    """/proc/PID/stat from its state field on (after the command name), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses itself.
    return text[text.rfind(")") + 2 :]
