"""Run as a program: read N faker users into Arrow through the public API, print the table's
rows and size and the process's peak RSS.

`python rss_probe.py N` → one JSON line {"rows", "nbytes", "maxrss"} (bytes). A process of its
own, so each count's peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import sys

import ferry


def main() -> None:
    count = int(sys.argv[1])
    table = ferry.read("source-faker", {"count": count, "seed": 1})["users"].to_arrow()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": table.num_rows, "nbytes": table.nbytes, "maxrss": maxrss}))


if __name__ == "__main__":
    main()
