"""Many syncs on one machine: 20 at once vs one after another, SQLite vs a PostgreSQL store.

    .venv/bin/python benchmarks/many_syncs.py [--syncs 20] [--records 10000] [--output DIR]
                                              [--modes A,B] [--alone sqlite,postgres]

Each sync is its own connection file: source-generator (2 streams of --records records of
~200 bytes, a STATE every 1 000 records per stream) into destination-duckdb (one file each).
Modes, in this order:
- sequential-sqlite    the syncs one after another, `ferry sync` per connection, SQLite store;
- concurrent-sqlite    every `ferry sync` process started at once, one SQLite store;
- concurrent-postgres  the same against one PostgreSQL store (a throwaway cluster on loopback,
                       fsync on, tests/pgkit.py; in a session of its own, as pg_ctl starts it,
                       hence its own scheduling group where Linux has autogroups);
- concurrent-postgres-nice  the same with FERRY_CONNECTOR_NICE=5 (connectors nicer than ferry;
                       with --modes, any mode name ending in -niceN runs with N);
- one-process-postgres one `ferry sync DIR --parallel N` running them all in one process;
- one-process-postgres-nice  the same with FERRY_CONNECTOR_NICE=5.
Then the store alone: as many processes committing 100 batches each at once, nothing else
running, for each backend: back to back (a throughput test: the commits queue for the CPU) and
paced (PACED_PAUSE between two commits of a process, closer to what syncs do).
Each ferry process runs through benchmarks/ferry_rusage.py: its own peak RSS and CPU, and the
duration of every store commit it made (FERRY_BENCH_COMMITS=1), under that load: the latency
ferry observes (commit_ms_*), and as a share of the process's wall time
(share_of_wall_in_commits). The server logs every statement with its duration: the sum over a
commit's statements, BEGIN to COMMIT (the WAL flush included), is its server-side time
(server_commit_ms_*). What lies between the two is the client's own work and the time both
sides wait for a CPU: 20 processes and their 40 connectors on 2 cores. `commit_split` splits
each commit as the sync's event loop sees it (handoff to a thread, to the server, at the server,
from the server, back to the loop) and gives how long ferry's threads and the backend waited
for a CPU meanwhile (run-queue wait from /proc/<tid>/schedstat): the part no client can avoid
on an oversubscribed machine.
The CPU a mode needed is ferry's with its connectors (os.wait4 of each ferry process: its
reaped children included) plus, for PostgreSQL, the server's processes (from /proc). The target
"no contention of ferry's own" is wall <= CPU / cores (ratio <= 1, with some slack for start-up
on a shared machine); the PostgreSQL target is a commit p99 under 10 ms. The load average at
each mode's start and end tells how much else ran on the machine.
Writes DIR/many_syncs.json and DIR/many_syncs.md (default DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pgkit import PostgresServer, start_postgres  # noqa: E402

RUSAGE = str(HERE / "ferry_rusage.py")
STREAMS = 2
STATE_EVERY = 1000
COMMIT_P99_TARGET_MS = 10.0
CONNECTOR_NICE = 5  # FERRY_CONNECTOR_NICE of the -nice mode
PACED_PAUSE = 0.05  # seconds between a paced writer's commits
# The server logs every statement with its duration (and when: %n, epoch seconds): the
# server-side time of each commit.
SERVER_LOGGING = {"log_min_duration_statement": "0", "log_line_prefix": "%n [%p] "}
_LOGGED = re.compile(
    r"^([0-9.]+) \[(\d+)\] LOG:  duration: ([0-9.]+) ms  (?:parse|bind|execute|statement)"
)


@dataclass
class ServerCommit:
    """A state commit's transaction as the server logged it (times: epoch seconds)."""

    backend: int
    start: float  # the first statement began (its log time less its duration; ms resolution)
    end: float  # COMMIT was logged: the WAL flushed
    busy_ms: float  # the sum of its statements' durations


def server_commits(log: Path, offset: int) -> list[ServerCommit]:
    """The state commits logged after `offset`, BEGIN to COMMIT (the WAL flush included)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    open_: dict[int, ServerCommit] = {}  # per backend, since its last transaction ended
    commits: dict[int, bool] = {}
    found = []
    for line in lines:
        logged = _LOGGED.search(line)
        if logged is None:
            continue
        at, pid, ms = float(logged.group(1)), int(logged.group(2)), float(logged.group(3))
        if "statement: BEGIN; " in line and line.endswith("; COMMIT"):  # one query string
            if "INTO connection_state" in line:
                found.append(ServerCommit(pid, at - ms / 1000, at, ms))
            continue
        if line.endswith(": BEGIN"):  # what ran before it on this session is no commit
            open_[pid], commits[pid] = ServerCommit(pid, at - ms / 1000, at, 0.0), False
        current = open_.setdefault(pid, ServerCommit(pid, at - ms / 1000, at, 0.0))
        current.end, current.busy_ms = at, current.busy_ms + ms
        commits[pid] = commits.get(pid, False) or "INTO connection_state" in line
        if line.endswith((": COMMIT", ": ROLLBACK")):
            if commits[pid]:
                found.append(current)
            del open_[pid]
            commits[pid] = False
    return found


PHASES = ("handoff", "to_server", "server", "from_server", "back")
SPLIT_ROWS = ("total", *PHASES, "cpu_wait", "main_runq", "thread_runq", "backend_runq")
SPLIT_MORE = tuple(f"{w}_{k}" for w in ("main", "thread", "backend") for k in ("cpu", "runs"))


def commit_split(phases: list[dict[str, Any]], server: list[ServerCommit]) -> dict[str, Any]:
    """Where a commit's time goes, as ferry's event loop sees it (ms): `handoff` (the loop
    hands it to a thread until that thread runs), `to_server` (until the server began its
    first statement: the client's work, the send, the backend waking up), `server` (first
    statement to COMMIT logged), `from_server` (until the store call returned in the thread),
    `back` (until the event loop went on); and the time spent waiting for a CPU (run-queue
    wait, /proc schedstat): the event loop's thread's from queued to resumed (`main_runq`),
    the committing thread's and its backend's from picked to stored (`thread_runq`,
    `backend_runq`), and their sum (`cpu_wait`; the committing thread's wait to be picked up
    is in `handoff`, not in it). `*_cpu`: CPU used; `*_runs`: times each got a CPU (x1000).
    Median and p99 of each, and their mean over the slowest 1% of commits (what the tail is)."""
    by_backend: dict[int, list[ServerCommit]] = {}
    for commit in server:
        by_backend.setdefault(commit.backend, []).append(commit)
    rows = [split_one(p, by_backend.get(p.get("backend") or -1, [])) for p in phases]
    if not rows:
        return {}
    rows.sort(key=lambda r: r["total"])
    tail = rows[int(len(rows) * 0.99) :]
    split: dict[str, Any] = {"matched": sum("server" in r for r in rows)}
    for key in SPLIT_ROWS + SPLIT_MORE:
        values = [r[key] for r in rows if key in r]
        if values:
            split.update(percentiles(values, f"{key}_ms", 1000))
            in_tail = [r[key] for r in tail if key in r]
            if in_tail:
                split[f"{key}_ms_tail_mean"] = round(statistics.mean(in_tail) * 1000, 2)
    return split


def split_one(p: dict[str, Any], on_its_backend: list[ServerCommit]) -> dict[str, float]:
    """One commit's row of `commit_split` (seconds)."""
    row = {"total": p["resumed"] - p["queued"], "handoff": p["picked"] - p["queued"],
           "back": p["resumed"] - p["stored"]}  # fmt: skip
    for who in ("thread", "main", "backend"):
        before, after = p.get(f"{who}_before") or [], p.get(f"{who}_after") or []
        if len(before) == 3 == len(after):
            row[f"{who}_runq"] = (after[1] - before[1]) / 1e9
            row[f"{who}_cpu"] = (after[0] - before[0]) / 1e9
            row[f"{who}_runs"] = (after[2] - before[2]) / 1000  # shown x1000
    waits = [row[k] for k in ("main_runq", "thread_runq", "backend_runq") if k in row]
    if waits:
        row["cpu_wait"] = sum(waits)
    # Its transaction: the one its backend ended while the store call ran (ms resolution).
    match = next(
        (c for c in on_its_backend if p["picked"] - 0.002 <= c.end <= p["stored"] + 0.002), None
    )
    if match is not None:
        row["to_server"] = max(0.0, match.start - p["picked"])
        row["server"] = match.end - match.start
        row["from_server"] = max(0.0, p["stored"] - match.end)
    return row


def server_commit_ms(log: Path, offset: int) -> list[float]:
    return [c.busy_ms for c in server_commits(log, offset)]


def percentiles(values: list[float], prefix: str, scale: float = 1.0) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        f"{prefix}_median": round(statistics.median(ordered) * scale, 2),
        f"{prefix}_p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * scale, 2),
    }


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


def start(report: Path, store: str, *args: str, nice: int = 0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FERRY_STATE_DB": store, "FERRY_BENCH_COMMITS": "1"}
    env["FERRY_CONNECTOR_NICE"] = str(nice)
    return subprocess.Popen(
        [sys.executable, RUSAGE, str(report), "sync", *args, "--json", "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # In the benchmark's session, as a script starting them would: on Linux one scheduling
        # group (autogroup) for all of them and their connectors. In 20 sessions of their own,
        # PostgreSQL's one group waited for a CPU behind 20 busy ones (server-side commits
        # 20 ms median), as a database sharing two cores with 20 independent jobs would.
        start_new_session=False,
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


@dataclass
class Postgres:
    """The benchmark's PostgreSQL server: a new database per mode, its log read per mode."""

    server: PostgresServer
    process: subprocess.Popen[bytes]
    log: Path

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.server.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.server.url(name)

    def log_size(self) -> int:
        return self.log.stat().st_size


def run_syncs(name: str, files: list[Path], store: str, reports: Path) -> float:
    """Run the mode's syncs; the CPU seconds the ferry processes and their connectors used."""
    if name.startswith("sequential"):
        return sum(
            reap(start(reports / f"{i}.json", store, str(path))) for i, path in enumerate(files)
        )
    niced = re.search(r"-nice(\d*)$", name)  # -nice: CONNECTOR_NICE, -niceN: N
    nice = int(niced.group(1) or CONNECTOR_NICE) if niced else 0
    if name.startswith("one-process"):
        everything = (str(files[0].parent), "--parallel", str(len(files)))
        return reap(start(reports / "all.json", store, *everything, nice=nice))
    processes = [
        start(reports / f"{i}.json", store, str(p), nice=nice) for i, p in enumerate(files)
    ]
    return sum(reap(process) for process in processes)


def run_mode(
    name: str, files: list[Path], store: str, work: Path, pg: Postgres | None
) -> dict[str, Any]:
    reports = work / f"{name}-reports"
    reports.mkdir()
    server_before = tree_cpu(pg.process.pid) if pg else 0.0
    log_offset = pg.log_size() if pg else 0
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cpu = run_syncs(name, files, store, reports)
    wall = time.perf_counter() - started
    server_cpu = (tree_cpu(pg.process.pid) - server_before) if pg else 0.0
    measured = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    commits = [s for m in measured for s in m.get("commit_seconds", [])]
    # The share of a ferry process's time spent inside store commits: its event loop (the
    # data path of every sync it runs) waits meanwhile.
    in_commits = [sum(m.get("commit_seconds", [])) / m["wall"] for m in measured]
    phases = [p for m in measured for p in m.get("commit_phases", [])]
    server = server_commits(pg.log, log_offset) if pg else []
    per_process = len(files) if len(measured) == 1 else 1
    rss_mb = [m["maxrss_kb"] / 1024 / per_process for m in measured]
    cores = os.cpu_count() or 1
    return {
        "mode": name,
        "syncs": len(files),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "cores": cores,
        "wall_vs_cpu_per_core": round(wall / ((cpu + server_cpu) / cores), 2),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "ferry_cpu_s_per_sync": round(sum(m["user"] + m["sys"] for m in measured) / len(files), 3),
        "ferry_rss_mb_per_sync_median": round(statistics.median(rss_mb), 1),
        "ferry_rss_mb_per_sync_max": round(max(rss_mb), 1),
        "commits": len(commits),
        **percentiles(commits, "commit_ms", 1000),
        **percentiles([c.busy_ms for c in server], "server_commit_ms"),
        "share_of_wall_in_commits": round(statistics.median(in_commits), 3),
        "commit_split": commit_split(phases, server),
    }


COMMITTER = """
import json, sys, time
from ferry.protocol import convert
from ferry.protocol.messages import AirbyteStateMessage
from ferry.store import open_store

url, name, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
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
    time.sleep(pause)
print(json.dumps(seconds))
"""


def commits_only(store: str, writers: int, pause: float, pg: Postgres | None) -> dict[str, Any]:
    """`writers` processes committing 100 batches at once, nothing else running, `pause`
    seconds between two commits of a writer (0: as fast as they can)."""
    log_offset = pg.log_size() if pg else 0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", COMMITTER, store, f"writer-{i}", "100", str(pause)],
            stdout=subprocess.PIPE,
        )
        for i in range(writers)
    ]
    seconds = [s for p in processes for s in json.loads(p.communicate()[0])]
    return {
        "writers": writers,
        "pause_ms": round(pause * 1000),
        "commits": len(seconds),
        **percentiles(seconds, "commit_ms", 1000),
        **(percentiles(server_commit_ms(pg.log, log_offset), "server_commit_ms") if pg else {}),
    }


MODES = (
    "sequential-sqlite", "concurrent-sqlite", "concurrent-postgres", "concurrent-postgres-nice",
    "one-process-postgres", "one-process-postgres-nice",
)  # fmt: skip


def store_for(name: str, work: Path, pg: Postgres) -> tuple[str, Postgres | None]:
    if "postgres" in name:
        return pg.database(name.replace("-", "_")), pg
    return f"sqlite://{work / name / 'ferry.db'}", None


def run_all(args: argparse.Namespace, work: Path, pg: Postgres) -> dict[str, Any]:
    results = []
    for name in args.modes:
        files = write_connections(work / name, args.syncs, args.records)
        store, used = store_for(name, work, pg)
        result = run_mode(name, files, store, work, used)
        result["records_per_s"] = round(args.syncs * args.records * STREAMS / result["wall_s"])
        print(json.dumps(result), flush=True)
        results.append(result)
    alone = []
    for backend in args.alone:
        for pause in (0.0, PACED_PAUSE):
            store, used = store_for(f"commits-{round(pause * 1000)}-{backend}", work, pg)
            alone.append({"backend": backend, **commits_only(store, args.syncs, pause, used)})
            print(json.dumps(alone[-1]), flush=True)
    return {"modes": results, "commits_only": alone}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=20)
    parser.add_argument("--records", type=int, default=10_000, help="records per stream")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    parser.add_argument(
        "--modes", type=lambda v: v.split(",") if v else [], default=list(MODES),
        help=f"comma-separated, of {','.join(MODES)} (default: all; '' for none)",
    )  # fmt: skip
    parser.add_argument(
        "--alone", type=lambda v: v.split(",") if v else [], default=["sqlite", "postgres"],
        help="the store-alone backends (default: sqlite,postgres; '' for none)",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-concurrent-"))
    os.chmod(work, 0o755)
    os.environ["FERRY_HOME"] = str(work / "home")
    server, process = start_postgres(work / "pg", fsync=True, settings=SERVER_LOGGING)
    load_before = os.getloadavg()
    try:
        measured = run_all(args, work, Postgres(server, process, work / "pg" / "log"))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "syncs": args.syncs,
            "records_per_sync": args.records * STREAMS,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        **measured,
        "targets": targets(measured),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "many_syncs.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "many_syncs.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def targets(measured: dict[str, Any]) -> dict[str, bool]:
    results = measured["modes"]
    sequential = next((r["wall_s"] for r in results if r["mode"] == "sequential-sqlite"), None)
    for result in results:
        if sequential is not None:
            result["speedup_vs_sequential"] = round(sequential / result["wall_s"], 2)
    found = {
        "concurrent_wall_within_cpu_per_core": all(
            r["wall_vs_cpu_per_core"] <= 1.1
            for r in results
            if r["mode"].startswith(("con", "one"))
        )
    }
    for pg in (r for r in results if "postgres" in r["mode"] and "commit_ms_p99" in r):
        mode = pg["mode"]
        found[f"{mode}_commit_p99_under_10ms"] = pg["commit_ms_p99"] < COMMIT_P99_TARGET_MS
        found[f"{mode}_server_commit_p99_under_10ms"] = (
            pg.get("server_commit_ms_p99", 0) < COMMIT_P99_TARGET_MS
        )
    return found


MODE_COLUMNS = (
    "mode", "wall_s", "speedup_vs_sequential", "records_per_s", "cpu_s", "server_cpu_s",
    "wall_vs_cpu_per_core", "load_average", "ferry_rss_mb_per_sync_median",
    "ferry_cpu_s_per_sync", "commits", "commit_ms_median", "commit_ms_p99",
    "server_commit_ms_median", "server_commit_ms_p99", "share_of_wall_in_commits",
)  # fmt: skip
ALONE_COLUMNS = (
    "backend", "writers", "pause_ms", "commits", "commit_ms_median", "commit_ms_p99",
    "server_commit_ms_median", "server_commit_ms_p99",
)  # fmt: skip


SPLIT_COLUMNS = ("mode", "part", "median", "p99", "tail")


def split_rows(modes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"mode": m["mode"], "part": part, "median": split[f"{part}_ms_median"],
         "p99": split[f"{part}_ms_p99"], "tail": split.get(f"{part}_ms_tail_mean", "")}
        for m in modes
        if (split := m.get("commit_split"))
        for part in SPLIT_ROWS
        if f"{part}_ms_median" in split
    ]  # fmt: skip


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    return "\n".join(
        [
            f"{meta['syncs']} syncs of {meta['records_per_sync']:,} records, {meta['when']},"
            f" load average {meta['load_average_before'][0]:.1f} before the run,"
            f" {meta['load_average_after'][0]:.1f} after (each mode's: its load_average column,"
            " at its start and end)",
            "",
            *table(report["modes"], MODE_COLUMNS),
            "",
            "The store alone: as many processes each committing 100 batches of 2 states at once,"
            " nothing else running, back to back (pause 0) or paced:",
            "",
            *table(report["commits_only"], ALONE_COLUMNS),
            "",
            "Where a commit's time goes (ms; `commit_split` in the JSON): the event loop hands"
            " it to a thread (handoff), the server starts it (to_server), runs it BEGIN to"
            " COMMIT (server), ferry's thread gets the result (from_server), the loop goes on"
            " (back); cpu_wait: run-queue wait (/proc schedstat) of the loop's thread, the"
            " committing thread and its PostgreSQL backend meanwhile. Tail: the mean over the"
            " slowest 1% of commits.",
            "",
            *table(split_rows(report["modes"]), SPLIT_COLUMNS),
            "",
            f"targets: {report['targets']}",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
