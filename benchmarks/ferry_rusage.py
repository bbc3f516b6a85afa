"""Run the ferry CLI in this process and report this process's own resource usage.

`python benchmarks/ferry_rusage.py OUT.json ferry-args...` behaves like `ferry ferry-args...` and
then writes {"user": s, "sys": s, "maxrss_kb": n, "minor_faults": n, "wall": s, "exit": code, ...}
to OUT.json. Only ferry's process is measured (RUSAGE_SELF): the connectors it starts are not
included.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    from ferry.cli.main import main as ferry_main

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
            },
            handle,
        )
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
