"""ferry's benchmark: one command, every path interleaved (A B C A B C ...), medians.

    .venv/bin/python benchmarks/run.py [--records N] [--repeat 5] [--quick]
                                       [--runtimes local,docker,relay,podman]
                                       [--rss-records 20000000] [--output DIR]

Workload: source-generator, 200-byte records, 2 streams, a STATE every 10 000 records per stream,
into destination-null. Paths measured, each repetition in the same order:
- pipe         `source-generator read | destination-null write`, an OS pipe, no orchestrator;
- naive        benchmarks/naive.py: readline + orjson per line, counts, echo thread;
- ferry_local  `ferry sync` (full bookkeeping: routing, counts, state ledger, SQLite commits);
- ferry_local_images_python  the same on the interpreter the test images carry (Debian's
  /usr/bin/python3.11, in a throwaway venv): with container paths selected, their ratios are
  taken against it, so that they compare the runtimes and not two builds of Python;
- ferry_docker, ferry_relay (docker with relay: true), ferry_podman (a pod per connector),
  ferry_podman_single (the single-pod layout: source, destination and ferry's pump in one pod)
  — when the engine and the test images (scripts/build_images.py) are there; otherwise
  reported as skipped.
Also: fixed start-up costs (connector start, ferry import, a 2-record sync per runtime, docker
container start), source-faker alone vs through ferry (and PyAirbyte's offline read into DuckDB
when a venv with `airbyte` exists), correctness runs (a 100 MB record and 1-byte records, exact
counts), ferry's peak RSS (its own process only: RUSAGE_SELF in benchmarks/ferry_rusage.py).

Timing is wall-clock of the whole command (time.perf_counter), start-up included for every path.
Writes DIR/latest.json, DIR/latest.md and DIR/chart.png (default DIR: benchmarks/results).
No assertion on speed anywhere: the numbers are reported, and the targets are marked met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent
RUSAGE = str(HERE / "ferry_rusage.py")
NAIVE = str(HERE / "naive.py")
SIZED = HERE / "sized_source.py"

RECORD_SIZE = 200
STREAMS = 2
STATE_EVERY = 10_000
DOCKER_SOURCE = "ferry-test/source-generator:dev"
DOCKER_DESTINATION = "ferry-test/destination-null:dev"
PYAIRBYTE_VENV = Path(tempfile.gettempdir()) / "ferry-bench-pyairbyte"
# The interpreter scripts/build_images.py copies into the test images (Debian's), which is not
# always the one running this benchmark: the container paths are compared with a local sync on
# that same interpreter, in a throwaway venv with ferry installed from this checkout.
IMAGES_PYTHON = "/usr/bin/python3.11"
IMAGES_PYTHON_VENV = Path(tempfile.gettempdir()) / "ferry-bench-images-python"
TARGETS = {
    "vs_pipe": 0.40,
    "vs_naive": 2.0,
    "mb_per_s": 250.0,
    "rss_mb": 150.0,
    "faker_rate": 0.97,
    "faker_overhead_s": 1.0,
    "data_phase_vs_local": 0.80,  # single pod and docker on a local engine
    "single_pod_2_records_s": 2.5,
}

Json = dict[str, Any]


class BenchError(Exception):
    """A benchmarked command failed or produced wrong counts."""


@dataclass
class Sample:
    wall: float
    records: int
    cpu: float | None = None  # ferry's own process, user + sys seconds
    rss_mb: float | None = None  # ferry's own peak RSS
    sync_seconds: float | None = None  # ferry's view: the attempt, without spec/discover


@dataclass
class Mode:
    name: str
    label: str
    run: Callable[[], Sample]
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None
    # ferry paths: a 2-record sync right after each run, whose data phase is the path's fixed
    # cost (connectors', containers' or pods' start and removal), taken off for the "flow"
    start: Callable[[], Sample] | None = None
    start_samples: list[Sample] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_command(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 3600,
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    started = time.perf_counter()
    result = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(argv[:4])} ... exited {result.returncode}: {tail}")
    return wall, result


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records: int = args.records
        self.work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
        self.home = self.work / "home"
        self.home.mkdir()
        self.env = {"FERRY_HOME": str(self.home)}
        self.log: list[str] = []
        self.catalog = self.write_file("catalog.json", self._catalog(STREAMS))
        self.null_config = self.write_file("null.json", {})

    # ------------------------------------------------------------------ files

    def write_file(self, name: str, data: Any) -> str:
        path = self.work / name
        path.write_text(json.dumps(data) if not isinstance(data, str) else data)
        return str(path)

    @staticmethod
    def _catalog(streams: int) -> Json:
        configured = []
        for i in range(streams):
            stream = {
                "name": f"stream_{i}",
                "json_schema": {"type": "object"},
                "supported_sync_modes": ["full_refresh", "incremental"],
            }
            configured.append(
                {"stream": stream, "sync_mode": "full_refresh", "destination_sync_mode": "append"}
            )
        return {"streams": configured}

    def generator_config(self, records: int, **extra: Any) -> Json:
        return {
            "count": max(1, records // STREAMS),
            "record_size": RECORD_SIZE,
            "streams": STREAMS,
            "state_every": STATE_EVERY,
            **extra,
        }

    def connection(
        self,
        name: str,
        records: int,
        *,
        runtime: str = "local",
        relay: bool = False,
        layout: str | None = None,
        source: str = "source-generator",
        destination: str = "destination-null",
        source_config: Json | None = None,
        streams: list[str] | None = None,
    ) -> str:
        source_block: Json = {
            "connector": source,
            "config": source_config or self.generator_config(records),
        }
        destination_block: Json = {"connector": destination, "config": {}}
        if relay:
            source_block["relay"] = destination_block["relay"] = True
        body: Json = {
            "name": name,
            "runtime": runtime,
            "source": source_block,
            "destination": destination_block,
        }
        if layout:
            body["kubernetes"] = {"layout": layout}
        names = streams if streams is not None else [f"stream_{i}" for i in range(STREAMS)]
        if names:
            body["streams"] = [
                {"name": n, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
                for n in names
            ]
        return self.write_file(f"{name}.yaml", json.dumps(body))  # JSON is YAML

    # ------------------------------------------------------------------ runners

    def pipe(self, records: int) -> Sample:
        config = self.write_file(f"gen-{records}.json", self.generator_config(records))
        script = '"$0" read --config "$1" --catalog "$2" | "$3" write --config "$4" --catalog "$2"'
        argv = [
            "sh",
            "-c",
            script,
            str(BIN / "source-generator"),
            config,
            self.catalog,
            str(BIN / "destination-null"),
            self.null_config,
        ]
        wall, result = run_command(argv)
        got = _null_count(result.stdout)
        _expect(got, _expected(records), "pipe")
        return Sample(wall, got)

    def naive(self, records: int) -> Sample:
        config = self.write_file(f"gen-{records}.json", self.generator_config(records))
        argv = [
            PYTHON,
            NAIVE,
            "--source",
            str(BIN / "source-generator"),
            "--destination",
            str(BIN / "destination-null"),
            "--source-config",
            config,
            "--destination-config",
            self.null_config,
            "--catalog",
            self.catalog,
            "--state-file",
            str(self.work / "naive-state.json"),
        ]
        wall, result = run_command(argv)
        summary = json.loads(result.stdout)
        _expect(summary["records"], _expected(records), "naive")
        return Sample(wall, summary["records"])

    def ferry_sync(
        self,
        connection: str,
        expected: int | None,
        what: str,
        *extra: str,
        venv: Path | None = None,
    ) -> tuple[Sample, Json]:
        """`ferry sync`, by this interpreter or by `venv`'s (its connectors first on PATH)."""
        usage_file = self.work / "rusage.json"
        env = dict(self.env)
        if venv is not None:
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = [
            str(venv / "bin" / "python") if venv is not None else PYTHON,
            RUSAGE,
            str(usage_file),
            "sync",
            connection,
            "--json",
            "--no-progress",
            "--retries",
            "0",
            *extra,
        ]
        wall, result = run_command(argv, env=env)
        summary = json.loads(result.stdout)
        usage = json.loads(usage_file.read_text())
        if summary.get("status") != "succeeded":
            raise BenchError(f"{what}: ferry sync {summary.get('status')}: {summary.get('error')}")
        if summary.get("warnings"):
            raise BenchError(f"{what}: ferry sync warnings: {summary['warnings']}")
        if expected is not None:
            _expect(summary["records_sent"], expected, what)
        sample = Sample(
            wall,
            summary["records_sent"],
            cpu=usage["user"] + usage["sys"],
            rss_mb=usage["maxrss_kb"] / 1024,
            sync_seconds=summary.get("seconds"),
        )
        return sample, summary

    def ferry(
        self,
        records: int,
        runtime: str = "local",
        relay: bool = False,
        layout: str | None = None,
        venv: Path | None = None,
    ) -> Sample:
        name = f"bench-{runtime}{'-relay' if relay else ''}{f'-{layout}' if layout else ''}"
        name += "-images-python" if venv is not None else ""
        kwargs: Json = {"runtime": runtime, "relay": relay, "layout": layout}
        if runtime != "local":
            kwargs["source"] = self.args.docker_source
            kwargs["destination"] = self.args.docker_destination
        connection = self.connection(name, records, **kwargs)
        sample, _ = self.ferry_sync(connection, _expected(records), name, venv=venv)
        return sample

    # ------------------------------------------------------------------ availability

    def container_engine(self, runtime: str) -> str | None:
        """None when `runtime` can run the test images here, else why not."""
        tool = "podman" if runtime == "podman" else "docker"
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
        probe = subprocess.run(
            [tool, "image", "inspect", self.args.docker_source, self.args.docker_destination],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            why = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"{tool} or its test images unavailable ({why[0][:160]})"
        return None


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _expected(records: int) -> int:
    return max(1, records // STREAMS) * STREAMS


def _expect(got: int, expected: int, what: str) -> None:
    if got != expected:
        raise BenchError(f"{what}: {got} records arrived, expected {expected}")


def _null_count(stdout: bytes) -> int:
    """destination-null's record count, from its final LOG line."""
    for line in reversed(stdout.splitlines()):
        if b'"LOG"' in line and b"records" in line:
            message = json.loads(line)["log"]["message"]
            return int(message.split(":", 1)[1].split("records", 1)[0].strip())
    raise BenchError("destination-null printed no summary")


def _workload_bytes(bench: Bench, records: int) -> int:
    """Bytes the source writes for the workload (every path moves exactly these)."""
    config = bench.write_file(f"gen-{records}.json", bench.generator_config(records))
    process = subprocess.Popen(
        [str(BIN / "source-generator"), "read", "--config", config, "--catalog", bench.catalog],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    total = 0
    while chunk := process.stdout.read(1 << 20):
        total += len(chunk)
    if process.wait() != 0:
        raise BenchError("source-generator failed")
    return total


def _ferry_summary_line(mode: Mode, pipe_wall: float, naive_wall: float, nbytes: int) -> Json:
    walls = [s.wall for s in mode.samples]
    wall = median(walls)
    records = mode.samples[0].records if mode.samples else 0
    row: Json = {
        "label": mode.label,
        "runs": len(walls),
        "wall_s": walls,
        "median_wall_s": round(wall, 4),
        "records": records,
        "records_per_s": round(records / wall) if wall else None,
        "mb_per_s": round(nbytes / wall / 1e6, 1) if wall else None,
        "vs_pipe": round(pipe_wall / wall, 3) if wall else None,
        "vs_naive": round(naive_wall / wall, 3) if wall else None,
    }
    cpus = [s.cpu for s in mode.samples if s.cpu is not None]
    if cpus:
        row["ferry_cpu_s"] = round(median(cpus), 3)
        row["ferry_cpu_ms_per_mb"] = round(median(cpus) / (nbytes / 1e6) * 1e3, 3)
    rss = [s.rss_mb for s in mode.samples if s.rss_mb is not None]
    if rss:
        row["ferry_peak_rss_mb"] = round(max(rss), 1)
    syncs = [s.sync_seconds for s in mode.samples if s.sync_seconds is not None]
    if syncs:
        row["sync_seconds"] = round(median(syncs), 3)
        row["sync_mb_per_s"] = round(nbytes / median(syncs) / 1e6, 1)
    starts = [s.sync_seconds for s in mode.start_samples if s.sync_seconds is not None]
    if syncs and starts and median(syncs) > median(starts):
        flow = median(syncs) - median(starts)
        row["start_seconds"] = round(median(starts), 3)
        row["flow_mb_per_s"] = round(nbytes / flow / 1e6, 1)
    return row


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------


def _ferry_runner(bench: Bench, records: int, kwargs: Json) -> Callable[[], Sample]:
    return lambda: bench.ferry(records, **kwargs)


def _start(bench: Bench, kwargs: Json) -> Callable[[], Sample]:
    """A 2-record sync of the same path: its data phase is the path's fixed cost."""
    return lambda: bench.ferry(STREAMS, **kwargs)


def throughput(bench: Bench, runtimes: list[str], repeat: int) -> tuple[Json, int]:
    records = bench.records
    nbytes = _workload_bytes(bench, records)
    containers = _container_modes(bench, records, runtimes)
    modes = [
        Mode("pipe", "pipe (no orchestrator)", lambda: bench.pipe(records)),
        Mode("naive", "naive Python orchestrator", lambda: bench.naive(records)),
        Mode("ferry_local", "ferry, local", lambda: bench.ferry(records), start=_start(bench, {})),
        *([_images_python_mode(bench, records)] if containers else []),
        *containers,
    ]
    for rep in range(repeat):
        for mode in modes:
            _run_once(mode, f"rep {rep + 1}/{repeat}")
    pipe_wall = median([s.wall for s in modes[0].samples])
    naive_wall = median([s.wall for s in modes[1].samples])
    table: Json = {}
    for mode in modes:
        if mode.skipped or not mode.samples:
            table[mode.name] = {"label": mode.label, "skipped": mode.skipped or "no samples"}
        else:
            table[mode.name] = _ferry_summary_line(mode, pipe_wall, naive_wall, nbytes)
    return table, nbytes


def _images_python_mode(bench: Bench, records: int) -> Mode:
    """A local sync on the test images' interpreter: the container paths' baseline."""
    kwargs: Json = {"venv": IMAGES_PYTHON_VENV}
    mode = Mode(
        "ferry_local_images_python",
        f"ferry, local on {IMAGES_PYTHON}",
        _ferry_runner(bench, records, kwargs),
        start=_start(bench, kwargs),
    )
    mode.skipped = images_python_venv(IMAGES_PYTHON_VENV)
    return mode


def images_python_venv(venv: Path) -> str | None:
    """Make `venv` on IMAGES_PYTHON with ferry from this checkout; None, or why it cannot."""
    if not Path(IMAGES_PYTHON).exists():
        return f"{IMAGES_PYTHON} is not there (the test images are built from it)"
    if not (venv / "bin" / "ferry").exists():
        progress(f"installing ferry into {venv} on {IMAGES_PYTHON} (a throwaway venv)")
        subprocess.run([IMAGES_PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(ROOT)]
        if subprocess.run(pip, capture_output=True, check=False).returncode != 0:
            return f"pip could not install ferry into {venv}"
    return None


def _container_modes(bench: Bench, records: int, runtimes: list[str]) -> list[Mode]:
    """The container paths of `runtimes`; skipped (saying why) where they cannot run here."""
    containers: list[tuple[str, str, str, Json]] = [
        ("docker", "ferry_docker", "ferry, docker", {"runtime": "docker"}),
        ("relay", "ferry_relay", "ferry, docker + relay", {"runtime": "docker", "relay": True}),
        ("podman", "ferry_podman", "ferry, podman pods", {"runtime": "podman"}),
        (
            "single-pod",
            "ferry_podman_single",
            "ferry, podman single-pod",
            {"runtime": "podman", "layout": "single-pod"},
        ),
    ]
    modes = []
    for key, name, label, kwargs in containers:
        if key not in runtimes:
            continue
        mode = Mode(name, label, _ferry_runner(bench, records, kwargs), start=_start(bench, kwargs))
        mode.skipped = bench.container_engine(str(kwargs["runtime"]))
        if mode.skipped is None:
            try:  # one small warm-up sync proves the runtime works (and pulls nothing)
                bench.ferry(2 * STREAMS, **kwargs)
            except BenchError as error:
                mode.skipped = f"a small sync failed: {str(error)[:300]}"
        modes.append(mode)
    return modes


def _run_once(mode: Mode, rep: str) -> None:
    """One sample of `mode` (and of its 2-record sync); a container path that fails is skipped
    from then on, the local paths must not fail."""
    if mode.skipped:
        return
    try:
        sample = mode.run()
        if mode.start is not None:
            mode.start_samples.append(mode.start())
    except BenchError as error:
        if mode.name in ("pipe", "naive", "ferry_local", "ferry_local_images_python"):
            raise
        mode.skipped = f"failed: {str(error)[:300]}"
        return
    mode.samples.append(sample)
    progress(f"  {rep} {mode.name:19s} {sample.wall:7.2f} s")


def startup(bench: Bench, runtimes: list[str], repeat: int) -> Json:
    """Fixed costs: what a sync of 2 records costs, next to a connector's own start."""
    tiny = 2
    probes: dict[str, Callable[[], float]] = {
        "connector_spec_s": lambda: run_command([str(BIN / "source-generator"), "spec"])[0],
        "ferry_import_s": lambda: run_command([PYTHON, "-c", "import ferry.cli.main"])[0],
        "ferry_spec_local_s": lambda: run_command(
            [str(BIN / "ferry"), "spec", "source-generator", "--json"], env=bench.env
        )[0],
        "pipe_2_records_s": lambda: bench.pipe(tiny).wall,
        "ferry_sync_2_records_local_s": lambda: bench.ferry(tiny).wall,
    }
    if "docker" in runtimes and bench.container_engine("docker") is None:
        image = bench.args.docker_source
        probes["docker_run_spec_s"] = lambda: run_command(["docker", "run", "--rm", image, "spec"])[
            0
        ]
        probes["ferry_spec_docker_s"] = lambda: run_command(
            [str(BIN / "ferry"), "spec", f"docker:{image}", "--json"], env=bench.env
        )[0]
        probes["ferry_sync_2_records_docker_s"] = lambda: bench.ferry(tiny, "docker").wall
        if "relay" in runtimes:
            probes["ferry_sync_2_records_relay_s"] = lambda: bench.ferry(tiny, "docker", True).wall
    if "podman" in runtimes and bench.container_engine("podman") is None:
        probes["ferry_sync_2_records_podman_s"] = lambda: bench.ferry(tiny, "podman").wall
    if "single-pod" in runtimes and bench.container_engine("podman") is None:
        probes["ferry_sync_2_records_podman_single_s"] = lambda: (
            bench.ferry(tiny, "podman", layout="single-pod").wall
        )
    values: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(repeat):
        for name, probe in probes.items():
            try:
                values[name].append(probe())
            except BenchError as error:
                progress(f"  startup probe {name} failed: {error}")
    result: Json = {name: round(median(v), 3) for name, v in values.items() if v}
    if "ferry_sync_2_records_local_s" in result and "pipe_2_records_s" in result:
        result["ferry_fixed_overhead_s"] = round(
            result["ferry_sync_2_records_local_s"] - result["pipe_2_records_s"], 3
        )
    if "ferry_spec_docker_s" in result and "ferry_spec_local_s" in result:
        result["docker_container_start_overhead_s"] = round(
            result["ferry_spec_docker_s"] - result["ferry_spec_local_s"], 3
        )
    return result


def rss_flatness(bench: Bench, small: int, large: int) -> Json:
    """ferry's peak RSS for a small and a large sync of the same workload."""
    out: Json = {}
    for records in (small, large):
        connection = bench.connection(f"rss-{records}", records)
        sample, summary = bench.ferry_sync(connection, _expected(records), f"rss {records}")
        out[str(records)] = {
            "records": summary["records_sent"],
            "bytes": summary["bytes_sent"],
            "wall_s": round(sample.wall, 2),
            "mb_per_s": round(summary["bytes_sent"] / sample.wall / 1e6, 1),
            "sync_seconds": summary.get("seconds"),
            "sync_mb_per_s": round(summary["bytes_sent"] / summary["seconds"] / 1e6, 1),
            "ferry_peak_rss_mb": round(sample.rss_mb or 0, 1),
            "ferry_cpu_s": round(sample.cpu or 0, 2),
        }
        progress(f"  rss {records:>10,} records: {out[str(records)]['ferry_peak_rss_mb']} MB")
    return out


def correctness(bench: Bench, big_payload: int, tiny_records: int) -> Json:
    """A record with a huge payload and many 1-byte payloads: exact counts and bytes."""
    if not os.access(SIZED, os.X_OK):
        SIZED.chmod(0o755)
    cases: dict[str, dict[str, int]] = {
        "huge_payload": {"count": 3, "payload_bytes": big_payload},
        "one_byte_payload": {"count": tiny_records, "payload_bytes": 1},
    }
    out: Json = {}
    for case, config in cases.items():
        connection = bench.connection(
            f"sized-{case}", 0, source=str(SIZED), source_config=config, streams=["sized"]
        )
        sample, summary = bench.ferry_sync(connection, config["count"], case)
        expected_bytes = sum(
            len(b'{"type":"RECORD","record":{"stream":"sized","data":{"id":%d,"payload":"' % i)
            + config["payload_bytes"]
            + len(b'"},"emitted_at":1700000000000}}\n')
            for i in range(1, config["count"] + 1)
        )
        ok = summary["records_sent"] == config["count"] and summary["bytes_sent"] == expected_bytes
        out[case] = {
            "payload_bytes": config["payload_bytes"],
            "records_expected": config["count"],
            "records": summary["records_sent"],
            "bytes_expected": expected_bytes,
            "bytes": summary["bytes_sent"],
            "states_committed": summary["states_committed"],
            "ok": ok,
            "wall_s": round(sample.wall, 2),
            "ferry_peak_rss_mb": round(sample.rss_mb or 0, 1),
        }
        if not ok:
            raise BenchError(f"correctness {case}: {out[case]}")
        progress(
            f"  {case}: {summary['records_sent']} records, {summary['bytes_sent']} bytes, exact"
        )
    return out


def find_faker(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    homes = [os.environ.get("FERRY_HOME"), str(Path.home() / ".ferry")]
    for home in homes:
        if home:
            candidate = Path(home) / "connectors" / "source-faker" / "bin" / "source-faker"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("source-faker")


PYAIRBYTE_SCRIPT = """
import json, os, sys, time
os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
os.environ.setdefault("DO_NOT_TRACK", "1")
started = time.perf_counter()
import airbyte as ab
from airbyte.caches import DuckDBCache
faker, count, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
source = ab.get_source("source-faker", config={"count": count}, local_executable=faker)
source.select_all_streams()
cache = DuckDBCache(db_path=os.path.join(work, "pyairbyte.duckdb"), cache_dir=work)
result = source.read(cache=cache, force_full_refresh=True)
records = sum(len(result[name]) for name in result.streams)
print(json.dumps({"records": records, "wall": time.perf_counter() - started}))
"""


def faker(bench: Bench, faker_exe: str | None, count: int, repeat: int, venv: Path) -> Json:
    if faker_exe is None:
        return {
            "skipped": "source-faker not found (ferry connectors install source-faker, or --faker)"
        }
    config = bench.write_file("faker.json", {"count": count, "seed": 1})
    _, discovered = run_command([faker_exe, "discover", "--config", config])
    streams = []
    for line in discovered.stdout.splitlines():
        message = json.loads(line) if line.startswith(b"{") else {}
        if message.get("type") == "CATALOG":
            streams = message["catalog"]["streams"]
    catalog = bench.write_file(
        "faker-catalog.json",
        {
            "streams": [
                {"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
                for s in streams
            ]
        },
    )
    connection = bench.connection(
        "faker",
        0,
        source=faker_exe,
        source_config={"count": count, "seed": 1},
        streams=[s["name"] for s in streams],
    )
    pyairbyte_python = venv / "bin" / "python"
    pyairbyte_note = None
    if not pyairbyte_python.exists():
        pyairbyte_note = f"no venv with airbyte at {venv} (run with --install-pyairbyte)"
    alone: list[float] = []
    discover: list[float] = []
    through: list[float] = []
    phase: list[float] = []
    pyairbyte: list[float] = []
    records = {"alone": 0, "ferry": 0, "pyairbyte": 0}
    for _ in range(repeat):
        wall, result = run_command([faker_exe, "read", "--config", config, "--catalog", catalog])
        alone.append(wall)
        records["alone"] = sum(
            1 for line in result.stdout.splitlines() if line.startswith(b'{"type":"RECORD"')
        )
        # The connectors' own start-up that a sync adds to a read: discover (specs are cached;
        # the catalog is not, so that every repetition measures the same thing).
        discover.append(run_command([faker_exe, "discover", "--config", config])[0])
        sample, summary = bench.ferry_sync(
            connection, None, "faker through ferry", "--no-catalog-cache"
        )
        through.append(sample.wall)
        phase.append(sample.sync_seconds or sample.wall)
        records["ferry"] = summary["records_sent"]
        if pyairbyte_note is None:
            try:
                wall, result = run_command(
                    [
                        str(pyairbyte_python),
                        "-c",
                        PYAIRBYTE_SCRIPT,
                        faker_exe,
                        str(count),
                        str(bench.work),
                    ],
                    env={"AIRBYTE_OFFLINE_MODE": "1"},
                )
                pyairbyte.append(wall)
                records["pyairbyte"] = json.loads(result.stdout.splitlines()[-1])["records"]
            except (BenchError, ValueError, KeyError, IndexError) as error:
                pyairbyte_note = f"PyAirbyte failed offline: {str(error)[-400:]}"
        progress(f"  faker rep: alone {alone[-1]:.2f} s, ferry {through[-1]:.2f} s")
    out: Json = {
        "count_config": count,
        "records": records["alone"],
        "faker_alone_s": round(median(alone), 3),
        "faker_alone_records_per_s": round(records["alone"] / median(alone)),
        "ferry_s": round(median(through), 3),
        "ferry_records_per_s": round(records["ferry"] / median(through)),
        "ferry_records": records["ferry"],
        "ferry_vs_alone": round(median(alone) / median(through), 3),
        # The read as ferry runs it (faker's start, its records, the destination's last commit)
        # against faker's own read: how much ferry slows the source.
        "ferry_data_phase_s": round(median(phase), 3),
        "ferry_rate_vs_alone": round(median(alone) / median(phase), 3),
        "faker_discover_s": round(median(discover), 3),
        # What ferry adds beyond the connectors' own runs: its import, store, file handling.
        "ferry_fixed_overhead_s": round(median(through) - median(phase) - median(discover), 3),
    }
    if pyairbyte:
        out["pyairbyte_s"] = round(median(pyairbyte), 3)
        out["pyairbyte_records"] = records["pyairbyte"]
        out["pyairbyte_records_per_s"] = round(records["pyairbyte"] / median(pyairbyte))
    else:
        out["pyairbyte_skipped"] = pyairbyte_note
    return out


def install_pyairbyte(venv: Path) -> None:
    if (venv / "bin" / "python").exists():
        return
    progress(f"installing PyAirbyte into {venv} (a throwaway venv; minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "airbyte"], check=True)


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def targets(
    table: Json, rss: Json | None, faker: Json | None = None, startup: Json | None = None
) -> Json:
    local = table.get("ferry_local", {})
    peak = [local.get("ferry_peak_rss_mb", 0.0)]
    if rss:
        peak += [v["ferry_peak_rss_mb"] for v in rss.values()]

    def at_least(value: float | None, target: float, what: str) -> Json:
        return {
            "what": what,
            "target": f">= {target}",
            "value": value,
            "met": (value or 0) >= target,
        }

    out = {
        "ferry_local_vs_pipe": at_least(
            local.get("vs_pipe"), TARGETS["vs_pipe"], "wall-clock ratio, start-up included"
        ),
        "ferry_local_vs_naive": at_least(
            local.get("vs_naive"), TARGETS["vs_naive"], "wall-clock ratio, start-up included"
        ),
        "ferry_local_mb_per_s": at_least(
            local.get("mb_per_s"), TARGETS["mb_per_s"], "whole command, start-up included"
        ),
        "ferry_local_data_phase_mb_per_s": at_least(
            local.get("sync_mb_per_s"),
            TARGETS["mb_per_s"],
            "ferry's own sync time: connectors' read/write start to the last commit",
        ),
    }
    if rss:
        largest = max(rss, key=int)
        out["ferry_long_run_mb_per_s"] = at_least(
            rss[largest]["mb_per_s"],
            TARGETS["mb_per_s"],
            f"whole command, {int(largest):,} records",
        )
    if faker and "ferry_rate_vs_alone" in faker:
        out["faker_rate_vs_alone"] = at_least(
            faker["ferry_rate_vs_alone"],
            TARGETS["faker_rate"],
            "faker's own read time over ferry's data phase, same run",
        )
        overhead = faker["ferry_fixed_overhead_s"]
        out["faker_fixed_overhead_s"] = {
            "what": "ferry's wall time minus its data phase and faker's own discover",
            "target": f"<= {TARGETS['faker_overhead_s']}",
            "value": overhead,
            "met": overhead <= TARGETS["faker_overhead_s"],
        }
    # The containers run the images' interpreter: their baseline is a local sync on it.
    baseline = table.get("ferry_local_images_python", {})
    on = f"the local runtime's on {IMAGES_PYTHON}, the images' interpreter"
    if not baseline.get("sync_mb_per_s"):
        baseline, on = local, "the local runtime's"
    for name in ("ferry_podman_single", "ferry_docker"):
        row = table.get(name, {})
        if row.get("sync_mb_per_s") and baseline.get("sync_mb_per_s"):
            out[f"{name}_data_phase_vs_local"] = at_least(
                round(row["sync_mb_per_s"] / baseline["sync_mb_per_s"], 3),
                TARGETS["data_phase_vs_local"],
                f"data phase MB/s over {on}, same run (start and removal of the containers "
                "or pod included)",
            )
        if row.get("flow_mb_per_s") and baseline.get("flow_mb_per_s"):
            out[f"{name}_flow_vs_local"] = at_least(
                round(row["flow_mb_per_s"] / baseline["flow_mb_per_s"], 3),
                TARGETS["data_phase_vs_local"],
                f"flow MB/s over {on}, same run (data phase minus a 2-record sync's: the "
                "fixed costs, measured by the 2-record target, taken off)",
            )
    tiny = (startup or {}).get("ferry_sync_2_records_podman_single_s")
    if tiny is not None:
        out["single_pod_2_records_s"] = {
            "what": "a 2-record sync in the single-pod layout, whole command",
            "target": f"<= {TARGETS['single_pod_2_records_s']}",
            "value": tiny,
            "met": tiny <= TARGETS["single_pod_2_records_s"],
        }
    out["ferry_peak_rss_mb"] = {
        "what": "ferry's process, every ferry run of this benchmark",
        "target": f"<= {TARGETS['rss_mb']}",
        "value": max(peak),
        "met": max(peak) <= TARGETS["rss_mb"],
    }
    return out


def markdown(report: Json) -> str:
    meta = report["meta"]
    lines = [
        "# ferry benchmark",
        "",
        f"{meta['records']:,} records of {RECORD_SIZE} bytes, {STREAMS} streams, a STATE every "
        f"{STATE_EVERY:,} records per stream ({meta['workload_mb']} MB); median of "
        f"{meta['repeat']} interleaved runs; {meta['cpus']} CPUs, load average "
        f"{meta['load_before']} before / {meta['load_after']} after; {meta['date']}.",
        "Wall time of the whole command, start-up included.",
        "",
        "| path | records/s | MB/s | vs pipe | vs naive | data phase MB/s | fixed s | flow MB/s "
        "| ferry CPU ms/MB | ferry peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [_markdown_row(row) for row in report["throughput"].values()]
    lines += [
        "",
        "MB/s: the source's bytes over the whole command's wall time (start-up included). Data "
        "phase: over ferry's own sync time (from starting the connectors' read/write to the "
        "end of the attempt, their containers' or pod's removal included; without ferry's "
        "import, spec and discover). Fixed: the data phase of a 2-record sync of the same path, "
        "run right after each repetition. Flow: over the data phase minus the fixed part. "
        "ferry CPU: ferry's process only (user + sys, start-up included), per MB moved.",
    ]
    start = report.get("startup", {})
    if start:
        lines += ["", "Fixed costs (median seconds):", ""]
        lines += [f"- `{k}`: {v}" for k, v in start.items()]
    rss = report.get("rss_flatness")
    if rss:
        lines += ["", "Peak RSS of ferry's process by sync size:", ""]
        lines += [
            f"- {int(k):,} records: {v['ferry_peak_rss_mb']} MB ({v['mb_per_s']} MB/s whole "
            f"command, {v['sync_mb_per_s']} MB/s data phase, ferry CPU {v['ferry_cpu_s']} s)"
            for k, v in rss.items()
        ]
    fk = report.get("faker")
    if fk:
        lines += ["", "source-faker:", ""]
        lines += [f"- `{k}`: {v}" for k, v in fk.items()]
    ok = report.get("correctness")
    if ok:
        lines += ["", "Correctness (through ferry, exact counts and bytes):", ""]
        lines += [
            f"- {k}: {v['records']}/{v['records_expected']} records, "
            f"{v['bytes']:,} bytes, {'exact' if v['ok'] else 'WRONG'}, "
            f"ferry peak RSS {v['ferry_peak_rss_mb']} MB"
            for k, v in ok.items()
        ]
    lines += ["", "Targets:", ""]
    lines += [
        f"- {k}: {v['value']} (target {v['target']}; {v['what']}) — "
        f"{'met' if v['met'] else 'NOT met'}"
        for k, v in report["targets"].items()
    ]
    return "\n".join(lines) + "\n"


def _markdown_row(row: Json) -> str:
    if "skipped" in row:
        return f"| {row['label']} | skipped: {row['skipped']} | | | | | | | | |"

    def number(key: str, spec: str, unit: str = "") -> str:
        value = row.get(key)
        return "" if value is None else f"{value:{spec}}{unit}"

    return (
        f"| {row['label']} | {row['records_per_s']:,} | {row['mb_per_s']:.0f} | "
        f"{row['vs_pipe']:.2f} | {row['vs_naive']:.2f} | {number('sync_mb_per_s', '.0f')} | "
        f"{number('start_seconds', '.2f')} | {number('flow_mb_per_s', '.0f')} | "
        f"{number('ferry_cpu_ms_per_mb', '.2f')} | {number('ferry_peak_rss_mb', '.0f', ' MB')} |"
    )


def chart(report: Json, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["throughput"].values() if "skipped" not in r][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(rows) + 1.8))
    height = 0.38
    for i, row in enumerate(rows):
        baseline = row["label"].startswith(("pipe", "naive"))
        ax.barh(
            i + height / 2,
            row["mb_per_s"],
            height,
            color="#888888" if baseline else "#1f77b4",
        )
        ax.text(
            row["mb_per_s"],
            i + height / 2,
            f" {row['mb_per_s']:.0f} MB/s ({row['vs_pipe']:.2f}x pipe)",
            va="center",
            fontsize=8,
        )
        if row.get("sync_mb_per_s"):
            ax.barh(
                i - height / 2,
                row["sync_mb_per_s"],
                height,
                color="#aec7e8",
            )
            ax.text(
                row["sync_mb_per_s"],
                i - height / 2,
                f" {row['sync_mb_per_s']:.0f}",
                va="center",
                fontsize=8,
            )
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    meta = report["meta"]
    ax.set_xlabel("MB/s (higher is better)")
    ax.set_title(
        f"{meta['records']:,} records x {RECORD_SIZE} B, {STREAMS} streams, state every "
        f"{STATE_EVERY:,} — median of {meta['repeat']} interleaved runs, {meta['cpus']} CPUs",
        fontsize=9,
    )
    ax.set_xlim(0, max(max(r["mb_per_s"], r.get("sync_mb_per_s") or 0) for r in rows) * 1.4)
    from matplotlib.patches import Patch

    handles = [
        Patch(color="#888888", label="baselines, whole command"),
        Patch(color="#1f77b4", label="ferry, whole command (start-up included)"),
        Patch(color="#aec7e8", label="ferry, data phase (its own sync time)"),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, help="records per run (default 2 000 000)")
    parser.add_argument("--repeat", type=int, help="interleaved repetitions (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="small defaults, local paths only, no faker"
    )
    parser.add_argument(
        "--runtimes",
        default=None,
        help="comma list of local,docker,relay,podman,single-pod (default all; --quick: local)",
    )
    parser.add_argument(
        "--rss-records",
        type=int,
        default=0,
        help="also sync 1 000 000 and this many records (e.g. 20000000): peak RSS stays flat",
    )
    parser.add_argument("--big-payload", type=int, help="bytes of the huge record (100 MB)")
    parser.add_argument("--faker", help="source-faker executable (default: an installed one)")
    parser.add_argument("--faker-count", type=int, default=5000)
    parser.add_argument("--no-faker", action="store_true")
    parser.add_argument("--install-pyairbyte", action="store_true")
    parser.add_argument("--pyairbyte-venv", type=Path, default=PYAIRBYTE_VENV)
    parser.add_argument("--docker-source", default=DOCKER_SOURCE)
    parser.add_argument("--docker-destination", default=DOCKER_DESTINATION)
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.records = args.records or (20_000 if args.quick else 2_000_000)
    args.repeat = args.repeat or (1 if args.quick else 5)
    args.big_payload = args.big_payload or (1_000_000 if args.quick else 100_000_000)
    runtimes = args.runtimes or ("local" if args.quick else "local,docker,relay,podman,single-pod")
    args.runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    bench = Bench(args)
    load_before = os.getloadavg()
    report: Json = {}
    try:
        progress(f"throughput: {args.records:,} records x {args.repeat} ({args.runtimes})")
        table, nbytes = throughput(bench, args.runtimes, args.repeat)
        report["throughput"] = table
        progress("start-up costs")
        report["startup"] = startup(bench, args.runtimes, max(3, args.repeat))
        progress("correctness")
        tiny = 2_000 if args.quick else 100_000
        report["correctness"] = correctness(bench, args.big_payload, tiny)
        if args.rss_records:
            progress("RSS flatness")
            report["rss_flatness"] = rss_flatness(bench, 1_000_000, args.rss_records)
        if not (args.quick or args.no_faker):
            if args.install_pyairbyte:
                install_pyairbyte(args.pyairbyte_venv)
            progress("source-faker")
            report["faker"] = faker(
                bench,
                find_faker(args.faker),
                args.faker_count,
                min(3, args.repeat),
                args.pyairbyte_venv,
            )
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    load_after = os.getloadavg()
    report["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "records": args.records,
        "record_size": RECORD_SIZE,
        "streams": STREAMS,
        "state_every": STATE_EVERY,
        "repeat": args.repeat,
        "quick": args.quick,
        "runtimes": args.runtimes,
        "workload_bytes": nbytes,
        "workload_mb": round(nbytes / 1e6, 1),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    report["targets"] = targets(
        report["throughput"], report.get("rss_flatness"), report.get("faker"), report["startup"]
    )
    report = {"meta": report.pop("meta"), **report}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "latest.md").write_text(markdown(report))
    chart(report, args.output / "chart.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
