"""Run the ferry CLI in this process and report this process's own resource usage.

`python benchmarks/ferry_rusage.py OUT.json ferry-args...` behaves like `ferry ferry-args...` and
then writes {"user": s, "sys": s, "maxrss_kb": n, "minor_faults": n, "wall": s, "exit": code, ...}
to OUT.json. Only ferry's process is measured (RUSAGE_SELF): the connectors it starts are not
included. With FERRY_BENCH_COMMITS=1 the JSON also holds "commit_seconds": the duration of
every state commit the store made (`SqlStore.commit_states`, timed around the call), and
"commit_phases": per commit, wall-clock times (time.time()) of its phases: `queued` (the sync's
event loop hands it to a thread), `picked` (the thread runs it), `stored` (the store returned),
`resumed` (the event loop goes on), plus /proc schedstat (CPU ns, run-queue wait ns, times
run) of the event loop's thread from queued to resumed, and of the committing thread and its
PostgreSQL backend (`backend`: its pid) from picked to stored.
"""

from __future__ import annotations

import contextvars
import json
import os
import resource
import sys
import time
from typing import Any

commit_seconds: list[float] = []
commit_phases: list[dict[str, Any]] = []
_phases: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "phases", default=None
)


def schedstat(path: str) -> list[int]:
    """CPU time and run-queue wait (ns) of a thread or process, from /proc."""
    try:
        with open(path) as handle:
            return [int(v) for v in handle.read().split()[:3]]
    except (OSError, ValueError):
        return []


MAIN = f"/proc/self/task/{os.getpid()}/schedstat"  # the event loop's thread


def backend_of(store: Any, connection: str) -> int | None:
    holding = getattr(store, "_holding", None)
    lease = holding(connection) if holding else None
    return lease.session.pgconn.backend_pid if lease is not None else None


def time_commits() -> None:
    from ferry.engine.sync import Attempt
    from ferry.store.sql import SqlStore

    commit = SqlStore.commit_states
    in_thread = Attempt._commit_in_thread  # noqa: SLF001 (timing it)

    def timed(store: Any, connection: str, *args: Any, **kwargs: Any) -> None:
        phases = _phases.get() or {}
        phases["picked"] = time.time()
        backend = backend_of(store, connection)
        where = f"/proc/{backend}/schedstat" if backend else ""
        phases.update(backend=backend, backend_before=schedstat(where))
        phases["thread_before"] = schedstat("/proc/thread-self/schedstat")
        started = time.perf_counter()
        try:
            commit(store, connection, *args, **kwargs)
        finally:
            commit_seconds.append(time.perf_counter() - started)
            phases["stored"] = time.time()
            phases["thread_after"] = schedstat("/proc/thread-self/schedstat")
            phases["backend_after"] = schedstat(where)

    async def handed(attempt: Any, confirmed: Any) -> None:
        phases: dict[str, Any] = {"queued": time.time(), "main_before": schedstat(MAIN)}
        token = _phases.set(phases)
        try:
            await in_thread(attempt, confirmed)
        finally:
            _phases.reset(token)
            phases["resumed"] = time.time()
            phases["main_after"] = schedstat(MAIN)
            commit_phases.append(phases)

    SqlStore.commit_states = timed  # type: ignore[method-assign,assignment]
    Attempt._commit_in_thread = handed  # type: ignore[method-assign,assignment]  # noqa: SLF001


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    from ferry.cli.main import main as ferry_main

    if os.environ.get("FERRY_EXPERIMENT_SWITCH"):
        sys.setswitchinterval(float(os.environ["FERRY_EXPERIMENT_SWITCH"]))
    if os.environ.get("FERRY_BENCH_COMMITS") == "1":
        time_commits()

    try:
        code = ferry_main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as handle:
        json.dump(
            {
                "user": usage.ru_utime,
                "sys": usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
                "minor_faults": usage.ru_minflt,
                "voluntary_switches": usage.ru_nvcsw,
                "involuntary_switches": usage.ru_nivcsw,
                "wall": wall,
                "exit": code,
                **({"commit_seconds": commit_seconds} if commit_seconds else {}),
                **({"commit_phases": commit_phases} if commit_phases else {}),
            },
            handle,
        )
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
