"""Measure the stdout relay: FIFO -> relay sidecar (busybox sh + socat) -> TCP -> RelayListener.

    PYTHONPATH=tests/kits .venv/bin/python tests/relay/bench_relay.py [--mib 2048] [--chunk 1048576] [--runs 3]

A coreutils `dd` (1 MiB blocks) writes zeros into the stdout FIFO as fast as the pipe takes them;
the real relay sidecar command carries them to a RelayListener on 127.0.0.1 whose reader only
counts bytes (read(chunk)). Reported per run: MB/s, CPU seconds of the sidecar (its shell, socat
and everything they ran, from wait4) and of ferry's process during the transfer. Not a test: it
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrapperkit import make_busybox_path

from ferry.relay import RelayListener, relay_sidecar_command


def reap(pid: int, out: dict[str, float]) -> None:
    _, status, usage = os.wait4(pid, 0)
    out["cpu"] = usage.ru_utime + usage.ru_stime
    out["status"] = os.waitstatus_to_exitcode(status)


def spawn(
    argv: list[str], bin_dir: str, fifo: Path, mib: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The sidecar (reaped with wait4 for its CPU time) and the producer writing the FIFO."""
    sidecar = subprocess.Popen(argv, env={"PATH": bin_dir}, stderr=subprocess.DEVNULL)
    dd = shutil.which("dd", path="/usr/bin:/bin")
    assert dd is not None
    producer = subprocess.Popen(
        [dd, "if=/dev/zero", f"of={fifo}", "bs=1M", f"count={mib}", "status=none"]
    )
    return sidecar, producer


async def one_run(mib: int, chunk: int, bin_dir: str, work: Path) -> tuple[float, float, float]:
    io_dir = work / f"io-{time.monotonic_ns()}"
    io_dir.mkdir()
    fifo = io_dir / "stdout"
    os.mkfifo(fifo, 0o666)
    async with RelayListener(bind_host="127.0.0.1") as listener:
        reg = listener.register("bench", reads_stdin=False, log=lambda line: None)
        argv = relay_sidecar_command(
            "stdout",
            token=reg.token,
            endpoint=listener.endpoint("127.0.0.1"),
            io_dir=str(io_dir),
            shell=("/bin/busybox", "sh"),
        )
        sidecar, producer = spawn(argv, bin_dir, fifo, mib)
        side: dict[str, float] = {}
        reaper = threading.Thread(target=reap, args=(sidecar.pid, side))
        reaper.start()
        total = 0
        first = await reg.stdout.read(chunk)
        total += len(first)
        cpu0, t0 = time.process_time(), time.perf_counter()
        while data := await reg.stdout.read(chunk):
            total += len(data)
        elapsed = time.perf_counter() - t0
        ferry_cpu = time.process_time() - cpu0
        producer.wait()
        await asyncio.to_thread(reaper.join)
        assert total == mib << 20, total
        return (total - len(first)) / elapsed / 1e6, side["cpu"], ferry_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bin_dir = make_busybox_path(work / "bin")
        for _ in range(args.runs):
            rate, sidecar_cpu, ferry_cpu = asyncio.run(one_run(args.mib, args.chunk, bin_dir, work))
            print(
                f"{args.mib} MiB, read({args.chunk}): {rate:7.0f} MB/s; CPU s: sidecar "
                f"{sidecar_cpu:.2f}, ferry {ferry_cpu:.2f} "
                f"({sidecar_cpu / (args.mib / 1024):.2f} / {ferry_cpu / (args.mib / 1024):.2f} per GiB)"
            )


if __name__ == "__main__":
    main()
