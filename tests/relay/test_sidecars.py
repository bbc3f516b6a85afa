"""Relay and heartbeat sidecars for real: busybox sh + socat processes against a real listener.

A "pod" here is the wrapper plus its sidecars as local processes sharing one directory, exactly
the commands a runtime puts into containers, with the sidecars on a busybox-only PATH (like the
sidecar image). The Docker test runs the relay sidecar in the sidecar image.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from wrapperkit import HANG_GUARD, FifoReader, Shell, until, wait_for, write_script

from ferry.errors import ConfigError, ConnectorCrashed, InternalError
from ferry.relay import (
    SIDECAR_IMAGE,
    HeartbeatSettings,
    RelayEndpoint,
    RelayListener,
    RelayRegistration,
    heartbeat_sidecar_command,
    relay_sidecar_command,
    sidecar_commands,
    wrapper_command,
)

pytestmark = pytest.mark.timeout(180)

FAST = HeartbeatSettings(interval=0.2, probe_timeout=1, max_failures=2, tick=0.05, linger=10)


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log: bytes = b""

    async def finish(self) -> int:
        _, err = await asyncio.wait_for(self.process.communicate(), HANG_GUARD)
        self.log = err
        assert self.process.returncode is not None
        return self.process.returncode


@dataclass
class Pod:
    """The wrapper and its sidecars as local processes."""

    listener: RelayListener
    io_dir: Path
    sidecar_shell: Shell
    wrapper_shell: Shell
    entrypoint: str
    args: Sequence[str] = ("read",)
    reads_stdin: bool = False
    heartbeat: HeartbeatSettings = FAST
    skip: Sequence[str] = ()
    lines: list[str] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)

    async def start(self) -> RelayRegistration:
        """Start the sidecars, then the wrapper (a pod starts them in any order)."""
        self.reg = self.listener.register(
            "test-connector", reads_stdin=self.reads_stdin, log=self.lines.append
        )
        commands = sidecar_commands(
            token=self.reg.token,
            endpoint=self.listener.endpoint("127.0.0.1"),
            reads_stdin=self.reads_stdin,
            io_dir=str(self.io_dir),
            heartbeat=self.heartbeat,
            shell=self.sidecar_shell.argv,
        )
        for name, argv in commands.items():
            if name not in self.skip:
                await self._spawn(name, argv, {"PATH": self.sidecar_shell.path})
        main = wrapper_command(
            self.args,
            image="ferry-test/fake:1",
            reads_stdin=self.reads_stdin,
            entrypoint=self.entrypoint,
            io_dir=str(self.io_dir),
            grace=2,
            poll=0.05,
            shell=self.wrapper_shell.argv,
        )
        await self._spawn("main", main.argv, {"PATH": self.wrapper_shell.path, **main.env})
        return self.reg

    async def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs[name] = Proc(name, process)

    async def finish(self) -> dict[str, int]:
        """Every process's exit status (each must end on its own)."""
        codes = {}
        for name, proc in self.procs.items():
            codes[name] = await proc.finish()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log.decode(errors='replace')}" for p in self.procs.values()
        )

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, 9)


def in_pod(
    test: Callable[[RelayListener], Awaitable[None]],
) -> None:
    async def main() -> None:
        async with RelayListener(bind_host="127.0.0.1") as listener:
            await test(listener)

    asyncio.run(main())


async def read_all(reg: RelayRegistration) -> bytes:
    chunks = []
    while chunk := await reg.stdout.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def cleanup(pod: Pod) -> Iterator[None]:
    try:
        yield
    finally:
        pod.kill()


ECHO_STDIN = """
echo "starting $*" >&2
cat
echo "done" >&2
exit "${EXIT_WITH:-0}"
"""


def test_pod_end_to_end(busybox_shell: Shell, shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    """The wrapper under `shell`; the sidecars always under busybox (the sidecar image)."""
    connector = write_script(tmp_path / "echo.sh", ECHO_STDIN)
    payload = b"".join(b'{"type":"RECORD","record":{"i":%d}}\n' % i for i in range(200_000))

    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            shell,
            entrypoint=f"EXIT_WITH=0 {shell.run(str(connector))}",
            args=["write", "--config", "/x y/config.json"],
            reads_stdin=True,
        )
        with cleanup(pod):
            reg = await pod.start()
            assert reg.stdin is not None
            received = asyncio.ensure_future(read_all(reg))
            for start in range(0, len(payload), 1 << 20):
                await reg.stdin.write(payload[start : start + (1 << 20)])
            await reg.stdin.close()
            assert await received == payload
            await reg.wait_stderr()
            assert await reg.wait_exit(HANG_GUARD) == 0
            codes = await pod.finish()
            assert codes == dict.fromkeys(codes, 0), pod.logs()
            assert set(codes) == {
                "relay-stdout",
                "relay-stderr",
                "relay-stdin",
                "heartbeat",
                "main",
            }
            assert pod.lines == ["starting write --config /x y/config.json", "done"]
            listener.unregister(reg.token)

    in_pod(test)


def test_exit_code_and_missing_entrypoint_travel_through_the_relay(
    busybox_shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    async def test(listener: RelayListener) -> None:
        pod = Pod(listener, io_dir, busybox_shell, busybox_shell, entrypoint="exit 7")
        with cleanup(pod):
            reg = await pod.start()
            assert await read_all(reg) == b""
            await reg.wait_stderr()
            assert await reg.wait_exit(HANG_GUARD) == 7
            assert (await pod.finish())["main"] == 7

        other = tmp_path / "other"
        other.mkdir()
        pod = Pod(listener, other, busybox_shell, busybox_shell, entrypoint="")
        with cleanup(pod):
            reg = await pod.start()
            assert await read_all(reg) == b""
            await reg.wait_stderr()
            assert await reg.wait_exit(HANG_GUARD) == 127
            assert any(
                "AIRBYTE_ENTRYPOINT is not set in image ferry-test/fake:1" in line
                for line in pod.lines
            )
            assert (await pod.finish())["main"] == 127

    in_pod(test)


def test_stdin_relay_ends_when_the_connector_ignores_stdin(
    busybox_shell: Shell, io_dir: Path
) -> None:
    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener, io_dir, busybox_shell, busybox_shell, entrypoint="exit 0", reads_stdin=True
        )
        with cleanup(pod):
            reg = await pod.start()
            assert await read_all(reg) == b""
            assert await reg.wait_exit(HANG_GUARD) == 0
            # ferry never closed stdin: the stdin relay still ends on its own.
            codes = await pod.finish()
            assert codes == dict.fromkeys(codes, 0), pod.logs()

    in_pod(test)


def test_connector_exiting_while_ferry_writes_stdin(busybox_shell: Shell, io_dir: Path) -> None:
    """ferry's writes fail with ConnectorCrashed (never hang); the exit code still arrives."""

    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint='read -r line; echo "got $line"; exit 3; : ',
            reads_stdin=True,
        )
        with cleanup(pod):
            reg = await pod.start()
            stdin = reg.stdin
            assert stdin is not None

            async def flood() -> None:
                await stdin.write(b"first line\n")
                for _ in range(1024):
                    await stdin.write(b"x" * (256 << 10))

            with pytest.raises(ConnectorCrashed, match="stopped reading its input"):
                await flood()
            await stdin.close()
            assert await read_all(reg) == b"got first line\n"
            assert await reg.wait_exit(HANG_GUARD) == 3
            codes = await pod.finish()
            assert codes == {**dict.fromkeys(codes, 0), "main": 3}, pod.logs()

    in_pod(test)


def test_relays_waiting_for_their_fifo_are_released(busybox_shell: Shell, io_dir: Path) -> None:
    """No stdin relay ever comes, so the connector never opens its FIFOs; the marker ends it all."""

    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint="echo never",
            reads_stdin=True,
            skip=("relay-stdin",),
        )
        with cleanup(pod):
            reg = await pod.start()
            await until(
                lambda: reg.stdout.connected and (io_dir / "stdin").exists(), "stdout relay"
            )
            (io_dir / "terminate").write_text("test: giving up\n")
            assert await read_all(reg) == b""
            await reg.wait_stderr()
            assert await reg.wait_exit(HANG_GUARD) == 143
            codes = await pod.finish()
            assert codes["main"] == 143
            assert codes["relay-stdout"] == codes["relay-stderr"] == codes["heartbeat"] == 0

    in_pod(test)


LOOPS = """
echo ready
trap 'echo stopping >&2; exit 0' TERM
while :; do sleep 0.05; done
"""


def test_heartbeat_gives_up_when_ferry_vanishes(
    busybox_shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    connector = write_script(tmp_path / "loop.sh", LOOPS)

    async def main() -> None:
        listener = RelayListener(bind_host="127.0.0.1")
        await listener.start()
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint=busybox_shell.run(str(connector)),
        )
        with cleanup(pod):
            reg = await pod.start()
            assert await reg.stdout.read(100) == b"ready\n"
            await listener.close()  # ferry is gone: connections refused from now on
            codes = await pod.finish()
            assert codes["main"] == 143, pod.logs()
            assert codes["heartbeat"] == 0
            marker = (io_dir / "terminate").read_text()
            assert "ferry is unreachable at 127.0.0.1:" in marker
            assert "2 heartbeats in a row failed" in marker
            assert "stopped the connector (ferry is unreachable" in pod.procs["main"].log.decode()

    asyncio.run(main())


def test_heartbeat_gives_up_when_ferry_hangs(
    busybox_shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    """ferry's port still accepts connections but never answers: each probe times out."""
    connector = write_script(tmp_path / "loop.sh", LOOPS)

    async def main() -> None:
        listener = RelayListener(bind_host="127.0.0.1")
        await listener.start()
        port = listener.port
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint=busybox_shell.run(str(connector)),
        )
        with cleanup(pod), socket.socket() as mute:
            reg = await pod.start()
            assert await reg.stdout.read(100) == b"ready\n"
            await listener.close()
            mute.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            mute.bind(("127.0.0.1", port))
            mute.listen(64)  # the kernel accepts; nobody ever reads or answers
            codes = await pod.finish()
            assert codes["main"] == 143, pod.logs()
            assert "ferry is unreachable" in (io_dir / "terminate").read_text()

    asyncio.run(main())


class RefusingServer(threading.Thread):
    """Accepts connections and closes them at once (every request fails); counts them."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()


@pytest.mark.parametrize(("marked", "tries"), [(True, 1), (False, 3)], ids=["gone", "alive"])
def test_exit_report_is_tried_once_after_the_termination_marker(
    busybox_shell: Shell, io_dir: Path, marked: bool, tries: int
) -> None:
    """With the marker (ferry is gone or withdrew the token) one failed report is enough: more
    would only keep the pod alive longer. Without it, a failing report is retried."""
    (io_dir / "exit").write_text("3\n")
    if marked:
        (io_dir / "terminate").write_text("test: ferry is gone\n")
    server = RefusingServer()
    server.start()
    try:
        argv = heartbeat_sidecar_command(
            token="a-test-token",
            endpoint=RelayEndpoint("127.0.0.1", server.port),
            io_dir=str(io_dir),
            settings=FAST,
            shell=busybox_shell.argv,
        )
        result = subprocess.run(
            argv,
            env={"PATH": busybox_shell.path},
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=False,
        )
    finally:
        server.sock.close()
    assert result.returncode == 0, result.stderr
    assert "could not report exit code 3 to ferry" in result.stderr
    assert server.accepted == tries


def test_unregister_stops_a_running_connector(
    busybox_shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    connector = write_script(tmp_path / "loop.sh", LOOPS)

    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint=busybox_shell.run(str(connector)),
        )
        with cleanup(pod):
            reg = await pod.start()
            assert await reg.stdout.read(100) == b"ready\n"
            listener.unregister(reg.token)
            codes = await pod.finish()
            assert codes["main"] == 143, pod.logs()
            assert "410 Gone" in (io_dir / "terminate").read_text()

    in_pod(test)


def test_large_output(busybox_shell: Shell, io_dir: Path) -> None:
    size = 128 << 20

    async def test(listener: RelayListener) -> None:
        pod = Pod(
            listener,
            io_dir,
            busybox_shell,
            busybox_shell,
            entrypoint=f"dd if=/dev/zero bs=1048576 count={size >> 20} 2>/dev/null; : ",
        )
        with cleanup(pod):
            reg = await pod.start()
            total = 0
            started = time.perf_counter()
            while chunk := await reg.stdout.read(1 << 20):
                total += len(chunk)
            elapsed = time.perf_counter() - started
            assert total == size
            assert await reg.wait_exit(HANG_GUARD) == 0
            print(f"relayed {size >> 20} MiB in {elapsed:.2f}s: {size / elapsed / 1e6:.0f} MB/s")
            codes = await pod.finish()
            assert codes == dict.fromkeys(codes, 0), pod.logs()

    in_pod(test)


def test_relay_sidecar_in_the_sidecar_image(
    docker_engine: None, busybox_shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    """The stdout relay runs in the sidecar image; the FIFO is shared through a bind mount."""
    docker = shutil.which("docker")
    assert docker is not None
    present = subprocess.run([docker, "image", "inspect", SIDECAR_IMAGE], capture_output=True)
    if present.returncode != 0:
        pytest.fail(f"{SIDECAR_IMAGE} is missing: run scripts/build_images.py")
    io_dir.chmod(0o777)
    name = f"ferry-test-relay-{os.getpid()}-{time.monotonic_ns()}"
    connector = write_script(tmp_path / "c.sh", "seq 1 100000\n")

    async def test(listener: RelayListener) -> None:
        reg = listener.register("docker-relayed", reads_stdin=False, log=print)
        relay = relay_sidecar_command(
            "stdout", token=reg.token, endpoint=RelayEndpoint("127.0.0.1", listener.port)
        )
        # The command is the whole argv (a pod's `command`): it replaces the image's entrypoint.
        container = await asyncio.create_subprocess_exec(
            docker, "run", "--rm", "--name", name, "--network", "host",
            "-v", f"{io_dir}:/ferry/io", "--entrypoint", relay[0], SIDECAR_IMAGE, *relay[1:],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        main = wrapper_command(
            ["read"],
            image="x",
            reads_stdin=False,
            entrypoint=busybox_shell.run(str(connector)),
            io_dir=str(io_dir),
            shell=busybox_shell.argv,
        )
        wrapper = await asyncio.create_subprocess_exec(
            *main.argv,
            env={"PATH": busybox_shell.path, **main.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stderr_reader = asyncio.ensure_future(_drain_fifo(io_dir / "stderr"))
        try:
            data = await asyncio.wait_for(read_all(reg), HANG_GUARD)
            assert data == b"".join(b"%d\n" % i for i in range(1, 100001))
            assert await wrapper.wait() == 0
            _, err = await asyncio.wait_for(container.communicate(), HANG_GUARD)
            assert container.returncode == 0, err.decode()
            await stderr_reader
        finally:
            remove = await asyncio.create_subprocess_exec(
                docker, "rm", "-f", name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            await remove.wait()
            if wrapper.returncode is None:
                os.killpg(wrapper.pid, 9)

    in_pod(test)


async def _drain_fifo(path: Path) -> None:
    """The stderr side has no relay in the Docker test: read it from a thread."""

    def drain() -> None:
        deadline = time.monotonic() + HANG_GUARD
        while not path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never appeared")
            time.sleep(0.01)
        with open(path, "rb") as fifo:
            while fifo.read(65536):
                pass

    await asyncio.to_thread(drain)


def test_sidecar_commands_shape() -> None:
    endpoint = RelayEndpoint("host.containers.internal", 40123)
    commands = sidecar_commands(token="tok_-123", endpoint=endpoint, reads_stdin=False)
    assert list(commands) == ["relay-stdout", "relay-stderr", "heartbeat"]
    stdout = commands["relay-stdout"]
    assert stdout[:2] == ["/bin/sh", "-c"]
    assert stdout[3:] == [
        "ferry-relay", "stdout", "/ferry/io", "host.containers.internal", "40123", "tok_-123",
        "262144", "30",
    ]  # fmt: skip
    assert HeartbeatSettings().give_up_within() < 30
    with pytest.raises(InternalError, match="url-safe"):
        sidecar_commands(token="a b", endpoint=endpoint, reads_stdin=True)
    with pytest.raises(ConfigError, match="host name"):
        RelayEndpoint("::1", 1)
    with pytest.raises(InternalError, match="unknown relay channel"):
        relay_sidecar_command("stdexit", token="t", endpoint=endpoint)


def test_wrapper_as_a_containers_main_process(
    docker_engine: None, io_dir: Path, tmp_path: Path
) -> None:
    """`docker stop` sends SIGTERM to PID 1 (the wrapper): it must stop the connector itself.

    Without its trap a shell as PID 1 ignores SIGTERM and Docker would KILL it after the
    timeout (exit 137); 143 and the connector's own TERM handler running prove the trap works.
    """
    docker = shutil.which("docker")
    assert docker is not None
    if subprocess.run([docker, "image", "inspect", SIDECAR_IMAGE], capture_output=True).returncode:
        pytest.fail(f"{SIDECAR_IMAGE} is missing: run scripts/build_images.py")
    io_dir.chmod(0o777)
    connector = write_script(tmp_path / "c.sh", LOOPS)
    name = f"ferry-test-wrapper-{os.getpid()}-{time.monotonic_ns()}"
    main = wrapper_command(["read"], image=SIDECAR_IMAGE, reads_stdin=False, entrypoint="sh /c.sh")
    env = [arg for key, value in main.env.items() for arg in ("-e", f"{key}={value}")]
    started = subprocess.run(
        [docker, "run", "-d", "--name", name, "-v", f"{io_dir}:/ferry/io",
         "-v", f"{connector}:/c.sh:ro", *env, "--entrypoint", main.argv[0], SIDECAR_IMAGE,
         *main.argv[1:]],
        capture_output=True, text=True,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        stdout, stderr = FifoReader(io_dir / "stdout"), FifoReader(io_dir / "stderr")
        wait_for(lambda: "ready" in stdout.text(), "the connector to start")
        subprocess.run([docker, "stop", "-t", "30", name], capture_output=True, check=True)
        code = subprocess.run(
            [docker, "wait", name], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert code == "143"
        stdout.join(HANG_GUARD)
        stderr.join(HANG_GUARD)
        assert "stopping" in stderr.text().splitlines()  # the connector's TERM handler ran
        assert (io_dir / "terminate").read_text() == "the wrapper received SIGTERM\n"
        assert (io_dir / "exit").read_text() == "143\n"
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True).stderr
        assert "stopped the connector (the wrapper received SIGTERM)" in logs
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
