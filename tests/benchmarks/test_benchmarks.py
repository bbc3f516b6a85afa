"""The benchmark command runs end to end on a tiny workload and writes its report.

Only the shape of the report is checked: no timing is asserted anywhere (the machines are shared
and noisy; the numbers are for people, in benchmarks/results/).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
RUN = REPO / "benchmarks" / "run.py"


def test_quick_benchmark_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--records",
            "2000",
            "--repeat",
            "1",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((out / "latest.json").read_text())
    assert {"meta", "throughput", "startup", "correctness", "targets"} <= report.keys()
    assert report["meta"]["records"] == 2000
    assert report["meta"]["workload_bytes"] > 2000 * 150

    for mode in ("pipe", "naive", "ferry_local"):
        row = report["throughput"][mode]
        assert "skipped" not in row, row
        assert row["records"] == 2000
        assert {"records_per_s", "mb_per_s", "vs_pipe", "vs_naive", "median_wall_s"} <= row.keys()
        assert len(row["wall_s"]) == 1
    local = report["throughput"]["ferry_local"]
    assert local["ferry_peak_rss_mb"] > 0
    assert local["ferry_cpu_s"] > 0

    startup = report["startup"]
    assert {"connector_spec_s", "ferry_sync_2_records_local_s", "ferry_fixed_overhead_s"} <= (
        startup.keys()
    )

    correctness = report["correctness"]
    assert correctness["huge_payload"]["ok"]
    assert correctness["one_byte_payload"]["ok"]
    assert correctness["one_byte_payload"]["records"] == 2000

    assert {
        "ferry_local_vs_pipe",
        "ferry_local_vs_naive",
        "ferry_local_mb_per_s",
        "ferry_local_data_phase_mb_per_s",
        "ferry_peak_rss_mb",
    } <= set(report["targets"])
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert "| ferry, local |" in (out / "latest.md").read_text()
    assert (out / "chart.png").read_bytes().startswith(b"\x89PNG")
