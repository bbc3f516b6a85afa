"""Which process owns a run, and whether that process still exists.

A run records host name, pid and the process start time (from /proc, where there is one): a pid
alone could have been reused by an unrelated process since. Liveness can only be judged on the
same host; a run owned by another host is assumed alive. The host is the pod's name where
Kubernetes passes one (`POD_NAME` from the downward API), otherwise the machine's host name.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot) as text; None if unknown."""
    stat = _stat(pid)
    if stat is None:
        return None
    fields = stat.split()
    # Fields after the command name: state is 3rd overall, starttime the 22nd.
    return fields[19] if len(fields) > 19 else None


def _stat(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses itself.
    return text[text.rfind(")") + 2 :]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str | None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def alive(self) -> bool:
        """False only when this owner process certainly no longer exists."""
        if self.host != host_name():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        stat = _stat(self.pid)
        if stat is None:
            return not os.path.isdir("/proc/self")  # no /proc: trust kill(0)
        fields = stat.split()
        if fields and fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return False
        return self.start is None or len(fields) <= 19 or fields[19] == self.start


def host_name() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def current_owner() -> Owner:
    pid = os.getpid()
    return Owner(host=host_name(), pid=pid, start=process_start(pid))
