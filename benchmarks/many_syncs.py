"""Many syncs on one machine: 20 at once vs one after another, SQLite vs a PostgreSQL store.

    .venv/bin/python benchmarks/many_syncs.py [--syncs 20] [--records 10000] [--output DIR]

Each sync is its own connection file: source-generator (2 streams of --records records of
~200 bytes, a STATE every 1 000 records per stream) into destination-duckdb (one file each).
Modes, in this order:
- sequential-sqlite    the syncs one after another, `ferry sync` per connection, SQLite store;
- concurrent-sqlite    every `ferry sync` process started at once, one SQLite store;
- concurrent-postgres  the same against one PostgreSQL store (a throwaway cluster on loopback,
                       fsync on, tests/pgkit.py);
- one-process-postgres one `ferry sync DIR --parallel N` running them all in one process.
Then the store alone: as many processes committing 100 batches each at once, nothing else
running, for each backend (the store's own latency, without the connectors' CPU load).
Each ferry process runs through benchmarks/ferry_rusage.py: its own peak RSS and CPU, and the
duration of every store commit it made (FERRY_BENCH_COMMITS=1), under that load.
The CPU a mode needed is ferry's with its connectors (os.wait4 of each ferry process: its
reaped children included) plus, for PostgreSQL, the server's processes (from /proc). The target
"no contention of ferry's own" is wall <= CPU / cores (ratio <= 1, with some slack for start-up
on a shared machine); the PostgreSQL target is a commit p99 under 10 ms.
Writes DIR/many_syncs.json and DIR/many_syncs.md (default DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pgkit import start_postgres  # noqa: E402

RUSAGE = str(HERE / "ferry_rusage.py")
STREAMS = 2
STATE_EVERY = 1000
COMMIT_P99_TARGET_MS = 10.0


def write_connections(directory: Path, syncs: int, records: int) -> list[Path]:
    directory.mkdir(parents=True)
    files = []
    for i in range(syncs):
        path = directory / f"sync-{i:02d}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "name": f"bench-{i:02d}",
                    "source": {
                        "connector": "source-generator",
                        "config": {
                            "count": records,
                            "streams": STREAMS,
                            "state_every": STATE_EVERY,
                        },
                    },
                    "destination": {
                        "connector": "destination-duckdb",
                        "config": {"path": str(directory / f"sync-{i:02d}.duckdb")},
                    },
                }
            )
        )
        files.append(path)
    return files


def start(report: Path, store: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FERRY_STATE_DB": store, "FERRY_BENCH_COMMITS": "1"}
    return subprocess.Popen(
        [sys.executable, RUSAGE, str(report), "sync", *args, "--json", "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def reap(process: subprocess.Popen[bytes]) -> float:
    """Wait for a ferry process; the CPU seconds it and its connectors used."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        assert process.stderr is not None
        raise SystemExit(f"a sync failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live children and its reaped ones (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        me, parent = int(stat.parent.name), int(fields[1])
        if me == pid:
            total += sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
        elif parent == pid:
            total += sum(int(f) for f in fields[11:13]) / ticks
    return total


def run_mode(
    name: str, files: list[Path], store: str, work: Path, server_pid: int | None
) -> dict[str, Any]:
    reports = work / f"{name}-reports"
    reports.mkdir()
    server_before = tree_cpu(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    cpu = 0.0
    if name.startswith("sequential"):
        for i, path in enumerate(files):
            cpu += reap(start(reports / f"{i}.json", store, str(path)))
    elif name.startswith("one-process"):
        cpu += reap(
            start(reports / "all.json", store, str(files[0].parent), "--parallel", str(len(files)))
        )
    else:
        processes = [start(reports / f"{i}.json", store, str(p)) for i, p in enumerate(files)]
        cpu += sum(reap(process) for process in processes)
    wall = time.perf_counter() - started
    server_cpu = (tree_cpu(server_pid) - server_before) if server_pid else 0.0
    measured = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    commits = sorted(s for m in measured for s in m.get("commit_seconds", []))
    per_process = len(files) if len(measured) == 1 else 1
    rss_mb = [m["maxrss_kb"] / 1024 / per_process for m in measured]
    cores = os.cpu_count() or 1
    needed = cpu + server_cpu
    return {
        "mode": name,
        "syncs": len(files),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "cores": cores,
        "wall_vs_cpu_per_core": round(wall / (needed / cores), 2),
        "ferry_cpu_s_per_sync": round(sum(m["user"] + m["sys"] for m in measured) / len(files), 3),
        "ferry_rss_mb_per_sync_median": round(statistics.median(rss_mb), 1),
        "ferry_rss_mb_per_sync_max": round(max(rss_mb), 1),
        "commits": len(commits),
        "commit_ms_median": round(statistics.median(commits) * 1000, 2),
        "commit_ms_p99": round(commits[min(len(commits) - 1, int(len(commits) * 0.99))] * 1000, 2),
    }


COMMITTER = """
import json, sys, time
from ferry.protocol import convert
from ferry.protocol.messages import AirbyteStateMessage
from ferry.store import open_store

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
attempt = store.start_attempt(store.start_run(name))
seconds = []
for k in range(count):
    states = [
        convert({"type": "STREAM", "stream": {"stream_descriptor": {"name": f"s{i}"},
                 "stream_state": {"cursor": k}}}, AirbyteStateMessage)
        for i in range(2)
    ]
    started = time.perf_counter()
    store.commit_states(name, attempt, states)
    seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""


def commits_only(store: str, writers: int, count: int) -> dict[str, Any]:
    """`writers` processes committing at once, nothing else: the store's own latency."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", COMMITTER, store, f"writer-{i}", str(count)],
            stdout=subprocess.PIPE,
        )
        for i in range(writers)
    ]
    seconds = sorted(s for p in processes for s in json.loads(p.communicate()[0]))
    return {
        "commits": len(seconds),
        "commit_ms_median": round(statistics.median(seconds) * 1000, 2),
        "commit_ms_p99": round(seconds[int(len(seconds) * 0.99)] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=20)
    parser.add_argument("--records", type=int, default=10_000, help="records per stream")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-concurrent-"))
    os.chmod(work, 0o755)
    os.environ["FERRY_HOME"] = str(work / "home")
    server, postgres = start_postgres(work / "pg", fsync=True)
    results = []
    try:
        import psycopg

        for name in ("sequential-sqlite", "concurrent-sqlite", "concurrent-postgres",
                     "one-process-postgres"):  # fmt: skip
            files = write_connections(work / name, args.syncs, args.records)
            if name.endswith("postgres"):
                database = name.replace("-", "_")
                with psycopg.connect(server.url(), autocommit=True) as admin:
                    admin.execute(f"CREATE DATABASE {database}")
                store, server_pid = server.url(database), postgres.pid
            else:
                store, server_pid = f"sqlite://{work / name / 'ferry.db'}", None
            result = run_mode(name, files, store, work, server_pid)
            result["records_per_s"] = round(args.syncs * args.records * STREAMS / result["wall_s"])
            print(json.dumps(result), flush=True)
            results.append(result)
        commit_load: dict[str, dict[str, Any]] = {}
        for backend in ("sqlite", "postgres"):
            if backend == "postgres":
                with psycopg.connect(server.url(), autocommit=True) as admin:
                    admin.execute("CREATE DATABASE commits_only")
                store = server.url("commits_only")
            else:
                store = f"sqlite://{work / 'commits-only.db'}"
            commit_load[backend] = commits_only(store, args.syncs, 100)
            print(backend, "commits only:", json.dumps(commit_load[backend]), flush=True)
    finally:
        postgres.send_signal(signal.SIGINT)
        postgres.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    sequential = results[0]["wall_s"]
    for result in results:
        result["speedup_vs_sequential"] = round(sequential / result["wall_s"], 2)
    pg = next(r for r in results if r["mode"] == "concurrent-postgres")
    report = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "syncs": args.syncs,
            "records_per_sync": args.records * STREAMS,
            "load_average": os.getloadavg(),
        },
        "modes": results,
        "commits_only": commit_load,
        "targets": {
            "concurrent_wall_within_cpu_per_core": all(
                r["wall_vs_cpu_per_core"] <= 1.1 for r in results[1:]
            ),
            "postgres_commit_p99_under_10ms": pg["commit_ms_p99"] < COMMIT_P99_TARGET_MS,
            "postgres_commit_p99_under_10ms_commits_only": commit_load["postgres"]["commit_ms_p99"]
            < COMMIT_P99_TARGET_MS,
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "many_syncs.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "many_syncs.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    columns = [
        "mode", "wall_s", "speedup_vs_sequential", "records_per_s", "cpu_s", "server_cpu_s",
        "wall_vs_cpu_per_core", "ferry_rss_mb_per_sync_median", "ferry_cpu_s_per_sync",
        "commit_ms_median", "commit_ms_p99",
    ]  # fmt: skip
    lines = [
        f"{report['meta']['syncs']} syncs of {report['meta']['records_per_sync']:,} records, "
        f"{report['meta']['when']}, load average {report['meta']['load_average'][0]:.1f}",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for mode in report["modes"]:
        lines.append("| " + " | ".join(str(mode[c]) for c in columns) + " |")
    lines += [
        "",
        "The store alone (as many processes committing 100 batches of 2 states at once):",
        "",
    ]
    for backend, load in report["commits_only"].items():
        lines.append(
            f"- {backend}: {load['commits']} commits, median {load['commit_ms_median']} ms, "
            f"p99 {load['commit_ms_p99']} ms"
        )
    lines += ["", f"targets: {report['targets']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
