"""The supervisor between ferry and a local connector: every process the connector starts ends
with it, even when ferry is SIGKILLed.

Run as a standalone script (`python -I -S supervisor.py FERRY_PID NICE ARGV...`, standard
library only, so it starts in ~15 ms) as the leader of a new process group (in ferry's session),
which the connector and what it forks share. It:
- adds NICE to its niceness, which the connector inherits (0: ferry's);
- asks the kernel for SIGHUP when ferry dies (PR_SET_PDEATHSIG: the kernel only signals a
  direct child, which is why this process exists) and becomes a child subreaper, so whatever the
  connector forks, even a daemon that left the group with setsid, is re-parented here rather
  than to init;
- runs the connector as its child, with PR_SET_PDEATHSIG SIGKILL should the supervisor die;
- ignores the SIGTERM/SIGINT that ferry sends to the whole group (the connector gets its own);
- when the connector exits, or when ferry dies, SIGKILLs every process left in the group and
  every process re-parented here; then exits as the connector did (its code, or its signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
SWEEP_SECONDS = 5.0  # at most this long killing leftovers (a fork bomb must not hang us)


def _prctl(option: int, value: int) -> None:
    # Not Linux: the process group is all there is.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _left_behind() -> list[int]:
    """Live processes of this group, and children of this supervisor (re-parented here)."""
    me = os.getpid()
    group = os.getpgrp()
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and (int(fields[1]) == me or int(fields[2]) == group):
            found.append(int(name))
    return found


def _kill_everything() -> None:
    deadline = time.monotonic() + SWEEP_SECONDS
    while True:
        left = _left_behind()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap_all()
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _exec_connector(argv: list[str]) -> None:
    """In the forked child: default signal handling, then the connector."""
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except OSError as error:
        os.write(2, f"ferry: cannot run {argv[0]}: {error.strerror}\n".encode())
    os._exit(127)


def _ferry_died(signum: int, frame: object) -> None:
    _kill_everything()
    os._exit(128 + signal.SIGHUP)


def main(args: list[str]) -> None:
    ferry_pid, nice, argv = int(args[0]), int(args[1]), args[2:]
    if nice:
        os.nice(nice)
    signal.signal(signal.SIGHUP, _ferry_died)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != ferry_pid:  # ferry died before the death signal was armed
        os._exit(128 + signal.SIGHUP)
    child = os.fork()
    if child == 0:
        _exec_connector(argv)
    # The connector holds the pipes now: the supervisor must not keep them open.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    _, status = os.waitpid(child, 0)
    _kill_everything()
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
