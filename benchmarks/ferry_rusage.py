"""Run the ferry CLI in this process and report this process's own resource usage.

`python benchmarks/ferry_rusage.py OUT.json ferry-args...` behaves like `ferry ferry-args...` and
then writes {"user": s, "sys": s, "maxrss_kb": n, "minor_faults": n, "wall": s, "exit": code, ...}
to OUT.json. Only ferry's process is measured (RUSAGE_SELF): the connectors it starts are not
included. With FERRY_BENCH_COMMITS=1 the JSON also holds "commit_seconds": the duration of
every state commit the store made (`SqlStore.commit_states`, timed around the call).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

commit_seconds: list[float] = []


def time_commits() -> None:
    from ferry.store.sql import SqlStore

    commit = SqlStore.commit_states

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            commit(*args, **kwargs)
        finally:
            commit_seconds.append(time.perf_counter() - started)

    SqlStore.commit_states = timed  # type: ignore[method-assign]


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    from ferry.cli.main import main as ferry_main

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
            },
            handle,
        )
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
