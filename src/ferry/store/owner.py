"""Which process owns a run, and whether that process still exists.

A run records host name, pid and the process start time (from /proc, where there is one): a pid
alone could have been reused by an unrelated process since. Liveness can only be judged on the
same host; a run owned by another host is assumed alive. The host is the pod's name where
Kubernetes passes one (`POD_NAME` from the downward API), otherwise the machine's host name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass

from ferry.home import ferry_home
from ferry.home import process_start_text as process_start
from ferry.home import process_stat as _stat


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


def sweep_run_dir() -> int:
    """Remove the entries of $FERRY_HOME/run whose owner process is gone (a SIGKILLed ferry's
    connector configs, a killed destination's batch files); returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(ferry_home() / "run"))
    except OSError:
        return 0
    host = host_name()
    for entry in entries:
        pid, _, rest = entry.name.partition("-")
        start = rest.partition("-")[0]
        if not pid.isdigit() or not start.isdigit():
            continue
        if Owner(host, int(pid), None if start == "0" else start).alive():
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        removed += 1
    return removed
