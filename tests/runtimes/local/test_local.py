"""The local runtime with real processes: files, streams, stderr, termination, dying with ferry."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.errors import ConfigError, ConnectorNotFound
from ferry.runtimes import get_runtime
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef, Verb
from ferry.runtimes.local.process import LocalProcess, LocalRuntime

REPO = Path(__file__).resolve().parents[3]


def sh(script: str, *, env: dict[str, str] | None = None) -> ConnectorRef:
    """A connector that is an inline sh script; the protocol arguments are its $@."""
    return ConnectorRef(
        "local", "/bin/sh", ("-c", script, "connector"), ConnectorOptions(env=env or {})
    )


async def start(
    ref: ConnectorRef, verb: Verb = "spec", files: dict[str, bytes] | None = None
) -> tuple[LocalProcess, list[str]]:
    lines: list[str] = []
    process = await LocalRuntime().start(ConnectorInvocation(ref, verb, files or {}), lines.append)
    return process, lines


async def read_all(process: LocalProcess, chunk: int = 1 << 20) -> bytes:
    parts = []
    while data := await process.stdout.read(chunk):
        parts.append(data)
    return b"".join(parts)


@pytest.fixture
def private_tmp(ferry_home: Path) -> Path:
    """Where the runtime makes its private dirs ($FERRY_HOME/run; so leftovers can be counted)."""
    directory = ferry_home / "run"
    directory.mkdir(mode=0o700)
    return directory


def test_get_runtime_gives_the_local_runtime() -> None:
    assert isinstance(get_runtime("local"), LocalRuntime)


def test_arguments_and_private_files(private_tmp: Path) -> None:
    script = """
        echo "args: $*"
        dir=$(dirname "$3")
        echo "dir mode: $(stat -c %a "$dir")"
        for f in "$dir"/*; do echo "file $(basename "$f") mode: $(stat -c %a "$f")"; done
        echo "config: $(cat "$3")"
    """
    files = {"config": b'{"a": 1}', "catalog": b'{"streams": []}', "state": b"[]"}

    async def run() -> tuple[str, int]:
        process, _ = await start(sh(script), "read", files)
        output = (await read_all(process)).decode()
        return output, await process.wait()

    output, code = asyncio.run(run())
    assert code == 0
    lines = output.splitlines()
    args = lines[0].removeprefix("args: ").split()
    assert args[0] == "read"
    assert args[1::2] == ["--config", "--catalog", "--state"]
    assert [Path(p).name for p in args[2::2]] == ["config.json", "catalog.json", "state.json"]
    assert all(Path(p).parent.parent == private_tmp for p in args[2::2])
    assert "dir mode: 700" in lines
    assert {"file catalog.json mode: 600", "file config.json mode: 600"} <= set(lines)
    assert 'config: {"a": 1}' in lines
    assert list(private_tmp.iterdir()) == [], "the temp dir is removed once the process ended"


def test_no_files_no_file_arguments(private_tmp: Path) -> None:
    async def run() -> bytes:
        process, _ = await start(sh('echo "$*"'))
        output = await read_all(process)
        await process.wait()
        return output

    assert asyncio.run(run()) == b"spec\n"
    assert list(private_tmp.iterdir()) == []


def test_environment_is_the_parents_plus_the_connectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TEST_INHERITED", "from-parent")
    ref = sh('echo "$FERRY_TEST_INHERITED $FERRY_TEST_OWN"', env={"FERRY_TEST_OWN": "own"})

    async def run() -> bytes:
        process, _ = await start(ref)
        output = await read_all(process)
        await process.wait()
        return output

    assert asyncio.run(run()) == b"from-parent own\n"


def test_stdin_is_only_open_for_write() -> None:
    async def run() -> tuple[bool, bytes]:
        process, _ = await start(sh("cat; echo done"), "read")
        output = await read_all(process)  # cat reads /dev/null: ends at once
        await process.wait()
        return process.stdin is None, output

    assert asyncio.run(run()) == (True, b"done\n")


def test_stdin_to_stdout_round_trip_keeps_every_byte() -> None:
    payload = b"".join(b'{"type":"RECORD","n":%d}\n' % i for i in range(1_000_000))  # ~25 MB

    async def run() -> tuple[bytes, int]:
        process, _ = await start(sh("cat"), "write")
        assert process.stdin is not None

        async def feed() -> None:
            assert process.stdin is not None
            for offset in range(0, len(payload), 300_000):
                await process.stdin.write(payload[offset : offset + 300_000])
            await process.stdin.close()

        output, _ = await asyncio.gather(read_all(process, 65536), feed())
        return output, await process.wait()

    output, code = asyncio.run(run())
    assert code == 0
    assert hashlib.sha256(output).digest() == hashlib.sha256(payload).digest()


def test_write_waits_while_the_connector_does_not_read() -> None:
    # cat cannot take 16 MiB while nobody reads its output: its stdin pipe, its buffer and its
    # stdout pipe hold a few MiB. So the write cannot finish until ferry reads stdout.
    payload = b"x" * (16 << 20)

    async def run() -> tuple[bool, int, int]:
        process, _ = await start(sh("cat"), "write")
        assert process.stdin is not None
        writing = asyncio.create_task(process.stdin.write(payload))
        await asyncio.sleep(0.3)
        blocked = not writing.done()
        reading = asyncio.create_task(read_all(process))
        await writing
        await process.stdin.close()
        output = await reading
        return blocked, len(output), await process.wait()

    assert asyncio.run(run()) == (True, len(payload), 0)


def test_write_to_a_connector_that_is_gone_raises_broken_pipe_and_close_does_not() -> None:
    async def run() -> int:
        process, _ = await start(sh("exit 4"), "write")
        assert process.stdin is not None
        code = await process.wait()
        with pytest.raises(BrokenPipeError):
            await process.stdin.write(b"x" * (4 << 20))
        await process.stdin.close()
        await process.stdin.close()  # idempotent
        with pytest.raises(BrokenPipeError):
            await process.stdin.write(b"more")
        return code

    assert asyncio.run(run()) == 4


def test_stderr_goes_to_the_log_line_by_line_and_the_tail_keeps_the_last_lines() -> None:
    script = (
        'i=1; while [ $i -le 30 ]; do echo "line $i" >&2; i=$((i+1)); done; printf "no newline" >&2'
    )

    async def run() -> tuple[list[str], list[str]]:
        process, lines = await start(sh(script))
        await read_all(process)
        await process.wait()
        return lines, process.stderr_tail()

    lines, tail = asyncio.run(run())
    assert lines == [f"line {i}" for i in range(1, 31)] + ["no newline"]
    assert tail == lines[-20:]


def test_an_endless_stderr_line_is_logged_in_pieces_not_held_forever() -> None:
    script = "head -c 300000 /dev/zero | tr '\\0' x >&2; echo ' end' >&2"

    async def run() -> list[str]:
        process, lines = await start(sh(script))
        await read_all(process)
        await process.wait()
        return lines

    lines = asyncio.run(run())
    assert len(lines) > 1
    assert max(len(line) for line in lines) < 300000
    assert "".join(lines) == "x" * 300000 + " end"


def test_output_after_exit_is_complete_even_when_a_grandchild_held_the_pipe() -> None:
    # The connector leaves a background process holding stdout and stderr open. ferry must still
    # see the end of the output once the connector itself has exited (no hang), and the
    # background process ends with the connector.
    script = 'sleep 3600 & echo "$!"; echo "last line"; echo "bye" >&2; exit 0'

    async def run() -> tuple[bytes, list[str], int]:
        process, lines = await start(sh(script))
        output = await read_all(process)
        return output, lines, await process.wait()

    output, lines, code = asyncio.run(run())
    grandchild, last = output.decode().splitlines()
    assert (last, lines, code) == ("last line", ["bye"], 0)
    assert wait_until_dead(int(grandchild))


def test_large_output_arrives_whole_in_large_reads() -> None:
    # A source-generator-like burst of 200-byte lines (256 MB); throughput is in the benchmarks.
    line = b'{"type":"RECORD","record":{"stream":"s","data":{"x":"%s"},"emitted_at":1}}\n' % (
        b"y" * 127
    )
    assert len(line) == 200
    script = f"import os\nblock = {line!r} * 5000\nfor _ in range(256):\n    os.write(1, block)\n"
    ref = ConnectorRef("local", sys.executable, ("-c", script))

    async def run() -> tuple[int, int, int, bytes]:
        process, _ = await start(ref)
        total = largest = 0
        last = b""
        while data := await process.stdout.read(1 << 20):
            total += len(data)
            largest = max(largest, len(data))
            last = data
        return total, largest, await process.wait(), last

    total, largest, code, last = asyncio.run(run())
    assert (total, code) == (200 * 5000 * 256, 0)
    assert largest > 65536, "reads are not limited to the default 64 KiB pipe"
    assert last.endswith(line)


def test_terminate_stops_the_connector_and_removes_its_files(private_tmp: Path) -> None:
    async def run() -> int:
        process, _ = await start(sh("echo ready; exec sleep 3600"), "check", {"config": b"{}"})
        assert await process.stdout.read(100) == b"ready\n"
        await process.terminate(grace=30)
        return await process.wait()

    assert asyncio.run(run()) == -signal.SIGTERM
    assert list(private_tmp.iterdir()) == []


def test_terminate_kills_a_connector_that_ignores_sigterm() -> None:
    script = 'trap "" TERM; echo ready; while :; do sleep 0.1; done'

    async def run() -> int:
        process, _ = await start(sh(script))
        assert await process.stdout.read(100) == b"ready\n"
        await process.terminate(grace=0.5)
        return await process.wait()

    assert asyncio.run(run()) == -signal.SIGKILL


def test_terminate_after_exit_is_harmless() -> None:
    async def run() -> int:
        process, _ = await start(sh("exit 7"))
        code = await process.wait()
        await process.terminate()
        await process.terminate()
        return code

    assert asyncio.run(run()) == 7


def test_missing_executable_is_connector_not_found(private_tmp: Path) -> None:
    ref = ConnectorRef("local", str(private_tmp.parent / "no-such-connector"))
    with pytest.raises(ConnectorNotFound, match="does not exist"):
        asyncio.run(start(ref, "check", {"config": b"{}"}))
    assert list(private_tmp.iterdir()) == [], "no temp dir is left behind"


def test_file_without_execute_permission_is_connector_not_found(tmp_path: Path) -> None:
    script = tmp_path / "connector.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ConnectorNotFound, match="not executable") as caught:
        asyncio.run(start(ConnectorRef("local", str(script))))
    assert caught.value.exit_code == 2


# --- ferry dies: its connectors must not survive ----------------------------------------------

FERRY_STARTS_A_CONNECTOR = """
import asyncio, signal, sys
from ferry.runtimes.base import ConnectorInvocation, ConnectorRef
from ferry.runtimes.local.process import LocalRuntime

# A shell wrapper that does not exec, with a forked worker and a daemon that left the group.
SCRIPT = "sleep 3600 & echo $!; setsid sleep 3600 & echo $!; echo $$; wait"

async def main():
    # A Python handler (not SIG_IGN): the connector gets the default action after exec.
    signal.signal(signal.SIGTERM, lambda *_: print("ferry got SIGTERM", flush=True))
    ref = ConnectorRef("local", "/bin/sh", ("-c", SCRIPT))
    process = await LocalRuntime().start(ConnectorInvocation(ref, "spec"), print)
    pids = b""
    while pids.count(b"\\n") < 3:
        pids += await process.stdout.read(100)
    print(process.pid, pids.decode().replace("\\n", " "), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def ferry_with_connector() -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A separate ferry process (in its own process group) that started a long-running
    connector; yields it and the pids of the connector's supervisor, worker, daemon and shell,
    and cleans all of them up whatever happens."""
    ferry = subprocess.Popen(
        [sys.executable, "-c", FERRY_STARTS_A_CONNECTOR],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=REPO,
    )
    pids: list[int] = []
    try:
        assert ferry.stdout is not None
        pids = [int(pid) for pid in ferry.stdout.readline().split()]
        yield ferry, pids
    finally:
        for pid in (ferry.pid, *pids):
            if pid and is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        ferry.wait()


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an unreaped corpse is dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ENOENT, or ESRCH when the process is reaped mid-read
        return False
    return fields[0] not in ("Z", "X")


def wait_until_dead(pid: int, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_connector_and_all_it_forked_die_when_ferry_alone_is_killed(
    ferry_with_connector: tuple[subprocess.Popen[str], list[int]],
) -> None:
    ferry, pids = ferry_with_connector
    assert all(is_alive(pid) for pid in pids)
    os.kill(ferry.pid, signal.SIGKILL)  # only ferry: no group kill reaches the connector
    ferry.wait()
    assert all(wait_until_dead(pid) for pid in pids), "a process of the connector outlived ferry"


def test_a_connector_has_a_process_group_of_its_own_in_ferrys_session(
    ferry_with_connector: tuple[subprocess.Popen[str], list[int]],
) -> None:
    """Ctrl-C at ferry's terminal (its foreground process group) misses the connector, which
    stays in ferry's session: Linux's autogroup, the scheduling group ferry's threads are in."""
    ferry, (supervisor, worker, _daemon, shell) = ferry_with_connector
    assert os.getpgid(worker) == os.getpgid(shell) == supervisor != os.getpgid(ferry.pid)
    assert os.getsid(shell) == os.getsid(ferry.pid)


def test_killing_ferrys_process_group_leaves_no_connector(
    ferry_with_connector: tuple[subprocess.Popen[str], list[int]],
) -> None:
    ferry, pids = ferry_with_connector
    os.killpg(ferry.pid, signal.SIGKILL)
    ferry.wait()
    assert all(wait_until_dead(pid) for pid in pids)


def test_terminate_ends_every_process_the_connector_forked() -> None:
    script = "sleep 3600 & echo $!; setsid sleep 3600 & echo $!; echo $$; wait"

    async def run() -> list[int]:
        process, _ = await start(sh(script))
        pids = b""
        while pids.count(b"\n") < 3:
            pids += await process.stdout.read(100)
        await process.terminate(grace=5)
        return [int(pid) for pid in pids.split()]

    pids = asyncio.run(run())
    try:
        assert not [pid for pid in pids if is_alive(pid)]
    finally:
        for pid in pids:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_file_modes_are_private_even_with_a_permissive_umask(private_tmp: Path) -> None:
    old = os.umask(0)
    try:
        script = 'stat -c %a "$(dirname "$3")" "$3"'

        async def run() -> bytes:
            process, _ = await start(sh(script), "check", {"config": b"{}"})
            output = await read_all(process)
            await process.wait()
            return output

        assert asyncio.run(run()).split() == [b"700", b"600"]
    finally:
        os.umask(old)


def connector_nice_value(private_tmp: Path) -> int:
    """The niceness a local connector runs at (field 19 of its /proc stat)."""

    async def run() -> bytes:
        process, _ = await start(sh("cut -d' ' -f19 /proc/$$/stat"))
        output = await read_all(process)
        assert await process.wait() == 0
        return output

    return int(asyncio.run(run()))


def test_connectors_run_as_nice_as_ferry_by_default(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRY_CONNECTOR_NICE", raising=False)
    assert connector_nice_value(private_tmp) == os.getpriority(os.PRIO_PROCESS, 0)


def test_ferry_connector_nice_makes_connectors_nicer_than_ferry(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_CONNECTOR_NICE", "3")
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert connector_nice_value(private_tmp) == min(19, ours + 3)
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


@pytest.mark.parametrize("value", ["-1", "20", "five"])
def test_a_bad_ferry_connector_nice_is_a_config_error_and_starts_nothing(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FERRY_CONNECTOR_NICE", value)
    with pytest.raises(ConfigError, match=f"FERRY_CONNECTOR_NICE='{value}' is not a nice"):
        asyncio.run(start(sh("echo started")))
    assert not list(private_tmp.iterdir())
