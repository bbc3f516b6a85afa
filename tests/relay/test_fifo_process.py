"""`FifoProcess` (the single pod's pump, Docker's FIFO path) against the real wrapper script."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from wrapperkit import HANG_GUARD, Shell, WrapperRun, write_script

from ferry.runtimes.fifo import FifoProcess, ensure_fifos, prepare_fifos

pytestmark = pytest.mark.timeout(120)

COUNT_LINES = """
n=0
while read -r line; do n=`expr "$n" + 1`; done
printf 'lines=%s\\n' "$n"
"""


async def read_all(process: FifoProcess) -> bytes:
    chunks = []
    while chunk := await process.stdout.read(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.asyncio
async def test_stdin_closed_before_the_wrapper_opened_it_still_ends_in_eof(
    shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    """The source failed before the destination's wrapper even started (a slow container start):
    closing its stdin must wait for the wrapper's open, or the connector waits for a writer
    forever (a FIFO opened for reading blocks until one comes)."""
    await prepare_fifos(io_dir, reads_stdin=True)  # as the pump does
    process = FifoProcess(io_dir, reads_stdin=True, log=lambda line: None, name="destination")
    closing = asyncio.create_task(process.stdin.close())  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    assert not closing.done()  # nobody holds the read end yet
    script = write_script(tmp_path / "count.sh", COUNT_LINES)
    run = WrapperRun(
        shell, io_dir, ["write"], airbyte_entrypoint=shell.run(str(script)), reads_stdin=True,
        relays=False,
    )  # fmt: skip
    output = await asyncio.wait_for(read_all(process), HANG_GUARD)
    await asyncio.wait_for(closing, HANG_GUARD)
    assert await asyncio.wait_for(process.wait(), HANG_GUARD) == 0
    assert output == b"lines=0\n"
    assert run.proc.wait(timeout=HANG_GUARD) == 0
    await process.close()


def test_fifos_made_by_either_side_are_usable_by_any_user(tmp_path: Path) -> None:
    directory = tmp_path / "io" / "destination"
    assert ensure_fifos(directory, reads_stdin=True)
    assert ensure_fifos(directory, reads_stdin=True)  # already there: nothing to do
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777
    for name in ("stdin", "stdout", "stderr"):
        mode = (directory / name).stat().st_mode
        assert stat.S_ISFIFO(mode)
        assert stat.S_IMODE(mode) == 0o666
