"""DockerRuntime and `ferry gc` against the real Docker engine (plus the pure helpers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from dockerkit import containers_of, docker_client, invocation

from ferry.errors import (
    ConfigError,
    ConnectorNotFound,
    ImageUnavailable,
    RuntimeUnavailable,
)
from ferry.protocol import decode_message
from ferry.runtimes import get_runtime
from ferry.runtimes.base import (
    OWNER_ID,
    ByteWriter,
    ConnectorInvocation,
    ConnectorOptions,
    ConnectorProcess,
    ConnectorRef,
)
from ferry.runtimes.docker.attach import Demuxer
from ferry.runtimes.docker.containers import lookup_ids, parse_cpu, parse_memory
from ferry.runtimes.docker.engine import engine_error
from ferry.runtimes.docker.fifo import DockerFifoProcess
from ferry.runtimes.docker.gc import collect_docker
from ferry.runtimes.docker.runtime import DockerProcess, DockerRuntime
from ferry.runtimes.gc import collect_garbage
from ferry.runtimes.owner import (
    HOST_LABEL,
    OWNER_LABEL,
    PID_LABEL,
    PID_START_LABEL,
    orphan_reason,
    process_start,
    split_owner,
)

REPO = Path(__file__).resolve().parents[3]
SECRET = "hunter2-" + uuid.uuid4().hex


# --- helpers --------------------------------------------------------------------------------


def tiny_ref(image: str, script: str | None = None, **options: Any) -> ConnectorRef:
    env = dict(options.pop("env", {}))
    if script is not None:
        env["TINY"] = script
    return ConnectorRef("docker", image, options=ConnectorOptions(env=env, **options))


async def read_all(process: ConnectorProcess) -> bytes:
    chunks = []
    while chunk := await process.stdout.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def run_to_end(
    inv: ConnectorInvocation, log: Callable[[str], None] | None = None
) -> tuple[bytes, int, list[str]]:
    """Start, read stdout to EOF, wait: stdout, exit code, logged stderr lines."""
    lines: list[str] = []
    runtime = DockerRuntime()
    try:
        process = await runtime.start(inv, log or lines.append)
        if process.stdin is not None:
            await process.stdin.close()
        out = await read_all(process)
        code = await process.wait()
    finally:
        await runtime.close()
    return out, code, lines


def inspect(container_id: str) -> dict[str, Any]:
    client = docker_client()
    try:
        info: dict[str, Any] = client.api.inspect_container(container_id)
    finally:
        client.close()
    return info


def messages(out: bytes) -> list[Any]:
    return [decode_message(line) for line in out.splitlines() if line.startswith(b"{")]


# --- pure helpers ---------------------------------------------------------------------------


def frames(parts: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack(">BxxxL", kind, len(data)) + data for kind, data in parts)


def test_demuxer_reassembles_frames_cut_anywhere() -> None:
    rng = random.Random(7)
    parts = [(rng.choice([1, 1, 2]), rng.randbytes(rng.randint(0, 3000))) for _ in range(300)]
    stream = frames(parts)
    expected_out = b"".join(data for kind, data in parts if kind == 1)
    expected_err = b"".join(data for kind, data in parts if kind == 2)
    for _ in range(20):
        demux = Demuxer()
        out: list[bytes] = []
        err: list[bytes] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 3, 7, 8, 9, 100, 4096, 70000])
            o, e = demux.feed(stream[pos : pos + step])
            out += [bytes(v) for v in o]
            err += [bytes(v) for v in e]
            pos += step
        assert b"".join(out) == expected_out
        assert b"".join(err) == expected_err
        assert not demux.in_frame


def test_engine_errors_blame_the_input_only_for_its_own_mistakes() -> None:
    def answer(status: int) -> docker.errors.APIError:
        response = requests.Response()
        response.status_code = status
        return docker.errors.APIError("refused", response=response, explanation="because")

    assert isinstance(engine_error("create a container", answer(400)), ConfigError)
    # 409: a name in use, a removal in progress: the engine's state, not the user's input.
    conflict = engine_error("remove a container", answer(409))
    assert isinstance(conflict, RuntimeUnavailable)
    assert not isinstance(conflict, ConfigError)
    assert isinstance(engine_error("start a container", answer(500)), RuntimeUnavailable)


def test_memory_and_cpu_forms() -> None:
    assert parse_memory("512m") == 512 << 20
    assert parse_memory("512Mi") == 512 << 20
    assert parse_memory("1g") == parse_memory("1Gi") == parse_memory("1GB") == 1 << 30
    assert parse_memory("1.5g") == 3 << 29
    assert parse_memory("67108864") == 64 << 20
    for bad in ("lots", "1i", "-5m", "1x", "1k"):
        with pytest.raises(ConfigError):
            parse_memory(bad)
    assert parse_cpu("0.5") == 500_000_000
    assert parse_cpu("500m") == 500_000_000
    assert parse_cpu("2") == 2_000_000_000
    for bad in ("many", "0", "-1", "nan"):
        with pytest.raises(ConfigError):
            parse_cpu(bad)


def test_image_user_lookup() -> None:
    passwd = "root:x:0:0::/:/bin/sh\napp:x:1234:2345::/:/bin/sh\n"
    group = "root:x:0:\nstaff:x:50:\n"
    assert lookup_ids("app", passwd, group) == (1234, 2345)
    assert lookup_ids("app:staff", passwd, group) == (1234, 50)
    assert lookup_ids("1234", passwd, group) == (1234, 2345)
    assert lookup_ids("777:88", passwd, group) == (777, 88)
    assert lookup_ids("ghost", passwd, group) is None
    assert lookup_ids("app:nogroup", passwd, group) is None


def test_orphan_decisions() -> None:
    host = "builder-1"
    owner = f"{host}-4242-abcdef12"
    labels = {OWNER_LABEL: owner, HOST_LABEL: host, PID_LABEL: "4242", PID_START_LABEL: "1000"}
    assert split_owner(owner) == (host, 4242)
    gone = orphan_reason(labels, "running", host=host, probe=lambda pid: None)
    assert gone is not None
    assert "4242" in gone
    assert orphan_reason(labels, "running", host=host, probe=lambda pid: 1000) is None
    reused = orphan_reason(labels, "running", host=host, probe=lambda pid: 999)
    assert reused is not None
    assert "another process" in reused
    # Another host: only finished containers are garbage; the owner may be alive over there.
    assert orphan_reason(labels, "running", host="elsewhere", probe=lambda pid: None) is None
    assert orphan_reason(labels, "exited", host="elsewhere", probe=lambda pid: None) is not None
    # Labels written by an older ferry: only the owner id.
    assert orphan_reason({OWNER_LABEL: owner}, "created", host=host, probe=lambda p: None)
    # This very process is never an orphan.
    assert orphan_reason({OWNER_LABEL: OWNER_ID}, "exited", probe=lambda p: None) is None


def test_process_start_sees_live_dead_and_zombie_processes() -> None:
    assert process_start(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # a zombie until reaped: it counts as gone
        try:
            status = Path(f"/proc/{child.pid}/stat").read_text()
        except OSError:  # ENOENT, or ESRCH when reaped mid-read
            break
        if status[status.rfind(")") + 2] == "Z":
            break
    assert process_start(child.pid) is None
    child.wait()
    assert process_start(child.pid) is None


# --- the runtime on a real engine -----------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_get_runtime_gives_docker() -> None:
    runtime = get_runtime("docker")
    assert isinstance(runtime, DockerRuntime)
    assert runtime.name == "docker"


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_greeting_args_stderr_and_exit_code(tiny_images: Any) -> None:
    out, code, _ = asyncio.run(run_to_end(invocation(tiny_ref(tiny_images.root), "discover")))
    assert out == b"tiny connector: discover\n"
    assert code == 0

    ref = tiny_ref(
        tiny_images.root, 'echo "to stdout"; echo "line 1" >&2; printf "tail" >&2; exit 7'
    )
    out, code, lines = asyncio.run(run_to_end(invocation(ref, "check")))
    assert out == b"to stdout\n"
    assert code == 7
    assert lines == ["line 1", "tail"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_stdin_streams_through_a_container_with_exact_bytes(tiny_images: Any) -> None:
    rng = random.Random(3)
    lines = [rng.randbytes(rng.randint(1, 400)).hex().encode() + b"\n" for _ in range(20_000)]
    payload = b"".join(lines)  # ~8 MB, sent in uneven writes

    async def scenario() -> tuple[bytes, int, list[str]]:
        runtime = DockerRuntime()
        logged: list[str] = []
        try:
            process = await runtime.start(
                invocation(tiny_ref(tiny_images.root, "cat; echo done >&2"), "write"), logged.append
            )
            assert process.stdin is not None

            async def feed() -> None:
                assert process.stdin is not None
                pos = 0
                while pos < len(payload):
                    step = rng.choice([1, 100, 5000, 65536, 300_000])
                    await process.stdin.write(payload[pos : pos + step])
                    pos += step
                await process.stdin.close()
                await process.stdin.close()  # idempotent

            writer = asyncio.create_task(feed())
            out = await read_all(process)
            await writer
            return out, await process.wait(), logged
        finally:
            await runtime.close()

    out, code, logged = asyncio.run(scenario())
    assert code == 0
    assert len(out) == len(payload)
    assert out == payload
    assert logged == ["done"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.timeout(120)
def test_writing_to_a_connector_that_exited_is_a_broken_pipe(tiny_images: Any) -> None:
    async def scenario() -> tuple[int, list[str]]:
        runtime = DockerRuntime()
        try:
            ref = tiny_ref(tiny_images.root, "head -c 10 >/dev/null; echo bye >&2; exit 3")
            process = await runtime.start(invocation(ref, "write"), lambda _: None)
            assert process.stdin is not None

            async def flood(stdin: ByteWriter) -> None:
                while True:  # the engine would swallow a few MB, then block forever
                    await stdin.write(b"x" * 65536)

            with pytest.raises(BrokenPipeError):
                await flood(process.stdin)
            await process.stdin.close()  # never raises
            assert await read_all(process) == b""
            return await process.wait(), process.stderr_tail()
        finally:
            await runtime.close()

    assert asyncio.run(scenario()) == (3, ["bye"])


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_container_killed_under_its_memory_limit_says_so(tiny_images: Any) -> None:
    async def scenario() -> tuple[int, list[str]]:
        runtime = DockerRuntime()
        try:
            # `tail` buffers a "line" of /dev/zero that never ends: it grows until the OOM kill.
            ref = tiny_ref(tiny_images.root, "tail /dev/zero", memory="16m")
            process = await runtime.start(invocation(ref, "spec"), lambda _: None)
            assert await read_all(process) == b""
            return await process.wait(), process.stderr_tail()
        finally:
            await runtime.close()

    code, tail = asyncio.run(scenario())
    assert code == 137
    assert "under its memory limit of 16m: most likely out of memory" in tail[-1]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize("fifo", ["1", "0"], ids=["fifo", "attach"])
def test_files_are_uploaded_not_mounted(
    tiny_images: Any, fifo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are uploaded either way; on this (local) engine the connector's stdio goes
    through FIFOs in a bind-mounted directory, or with FERRY_DOCKER_FIFO=0 the attach stream."""
    monkeypatch.setenv("FERRY_DOCKER_FIFO", fifo)
    config = json.dumps({"password": SECRET}).encode()
    state = b'{"cursor": 1}'
    script = 'for f in /ferry/*.json; do stat -c "%n %a %u" "$f"; done; cat /ferry/config.json; echo; cat'
    run_id = uuid.uuid4().hex

    async def scenario() -> tuple[bytes, dict[str, Any]]:
        runtime = DockerRuntime()
        try:
            inv = invocation(
                tiny_ref(tiny_images.root, script),
                "write",
                {"config": config, "catalog": b"{}", "state": state},
                run_id,
            )
            process = await runtime.start(inv, lambda line: None)
            assert isinstance(process, DockerProcess | DockerFifoProcess)
            details = inspect(process.container_id)  # while it runs (cat waits for stdin)
            assert process.stdin is not None
            await process.stdin.close()
            out = await read_all(process)
            assert await process.wait() == 0
            return out, details
        finally:
            await runtime.close()

    out, details = asyncio.run(scenario())
    lines = out.split(b"\n")
    assert lines[:3] == [
        b"/ferry/catalog.json 600 0",
        b"/ferry/config.json 600 0",
        b"/ferry/state.json 600 0",
    ]
    assert lines[3:] == [config, b""]
    mounts = [(m["Type"], m["Destination"]) for m in details["Mounts"]]
    assert mounts == ([("bind", "/ferry/io")] if fifo == "1" else [])  # the FIFOs, no file
    assert details["Args"][-7:] == [
        "write",
        "--config",
        "/ferry/config.json",
        "--catalog",
        "/ferry/catalog.json",
        "--state",
        "/ferry/state.json",
    ]
    assert SECRET not in json.dumps(details)
    assert details["HostConfig"]["LogConfig"]["Type"] == "none"


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize(
    ("variant", "owner"), [("app_user", "1234:2345"), ("numeric_user", "4321:4322")]
)
def test_non_root_image_user_reads_its_files(tiny_images: Any, variant: str, owner: str) -> None:
    image = getattr(tiny_images, variant)
    script = 'id -u; stat -c "%u:%g %a" /ferry /ferry/config.json; cat /ferry/config.json'
    inv = invocation(tiny_ref(image, script), "check", {"config": b'{"k": "v"}'})
    out, code, lines = asyncio.run(run_to_end(inv))
    assert code == 0, lines
    uid = owner.split(":")[0]
    assert out.decode().splitlines() == [uid, f"{owner} 700", f"{owner} 600", '{"k": "v"}']


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_labels_options_and_removal_after_exit(tiny_images: Any, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex
    volume = tmp_path / "out"
    volume.mkdir()
    ref = tiny_ref(
        tiny_images.root,
        'echo "$GREETING" > /data/greeting.txt; cat',
        env={"GREETING": "hi there"},
        memory="64Mi",
        cpu="500m",
        network="none",
        volumes={str(volume): "/data"},
    )

    async def scenario() -> dict[str, Any]:
        runtime = DockerRuntime()
        try:
            process = await runtime.start(invocation(ref, "write", run_id=run_id), lambda _: None)
            assert isinstance(process, DockerProcess | DockerFifoProcess)
            details = inspect(process.container_id)
            assert process.stdin is not None
            await process.stdin.close()
            assert await read_all(process) == b""
            assert await process.wait() == 0
            return details
        finally:
            await runtime.close()

    details = asyncio.run(scenario())
    labels = details["Config"]["Labels"]
    assert labels["ferry.run"] == run_id
    assert labels["ferry.connection"] == "test-docker"
    assert labels["ferry.role"] == "source"
    assert labels["ferry.owner"] == OWNER_ID
    assert labels[PID_LABEL] == str(os.getpid())
    assert labels[HOST_LABEL] == os.uname().nodename
    assert labels[PID_START_LABEL] == str(process_start(os.getpid()))
    host = details["HostConfig"]
    assert host["Memory"] == 64 << 20
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert host["AutoRemove"] is True
    assert host["Init"] is True
    assert "GREETING=hi there" in details["Config"]["Env"]
    assert details["Name"].startswith("/ferry-test-docker-source-write-")
    assert (volume / "greeting.txt").read_text() == "hi there\n"
    assert containers_of(run_id) == []  # removed once it exited and was drained


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize(
    ("script", "expected_code"),
    [('yes "$(printf "%0199d" 0)"', 143), ('trap "" TERM; yes "$(printf "%0199d" 0)"', 137)],
    ids=["stops-on-term", "ignores-term"],
)
def test_terminate_mid_stream_leaves_no_container(
    tiny_images: Any, script: str, expected_code: int
) -> None:
    run_id = uuid.uuid4().hex

    async def scenario() -> int:
        runtime = DockerRuntime()
        try:
            process = await runtime.start(
                invocation(tiny_ref(tiny_images.root, script), "read", run_id=run_id),
                lambda _: None,
            )
            got = 0
            while got < 5_000_000:  # mid-stream: the connector never stops by itself
                got += len(await process.stdout.read(1 << 20))
            await process.terminate(grace=1)
            await process.terminate(grace=1)  # idempotent
            return await process.wait()
        finally:
            await runtime.close()

    code = asyncio.run(scenario())
    assert code == expected_code  # 143: SIGTERM reached the connector; 137: SIGKILL after grace
    assert containers_of(run_id) == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_entrypoint_resolution(tiny_images: Any) -> None:
    with pytest.raises(
        ConnectorNotFound, match=r"runtime-tiny-noentry:dev has neither an ENTRYPOINT"
    ):
        asyncio.run(run_to_end(invocation(tiny_ref(tiny_images.no_entrypoint))))
    out, code, _ = asyncio.run(run_to_end(invocation(tiny_ref(tiny_images.airbyte_entrypoint))))
    assert (out, code) == (b"tiny connector: spec\n", 0)
    explicit = tiny_ref(tiny_images.no_entrypoint, entrypoint="/bin/echo explicit")
    out, code, _ = asyncio.run(run_to_end(invocation(explicit, "spec")))
    assert (out, code) == (b"explicit spec\n", 0)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_missing_image_is_image_unavailable(tiny_images: Any) -> None:
    missing = f"ferry-test/not-built-{uuid.uuid4().hex[:8]}:dev"
    with pytest.raises(ImageUnavailable) as never:
        asyncio.run(run_to_end(invocation(tiny_ref(missing, pull="never"))))
    assert missing in str(never.value)
    assert "'never'" in str(never.value)
    assert never.value.exit_code == 3

    unreachable = f"127.0.0.1:1/ferry-test/nothing-{uuid.uuid4().hex[:8]}:dev"
    with pytest.raises(ImageUnavailable) as pulled:
        asyncio.run(run_to_end(invocation(tiny_ref(unreachable))))
    assert unreachable in str(pulled.value)
    assert "'if-not-present'" in str(pulled.value)

    # `always` pulls even when the image is present locally, and a failed pull is an error.
    local_only = f"127.0.0.1:1/ferry-test/runtime-tiny-{uuid.uuid4().hex[:8]}:dev"
    client = docker_client()
    try:
        client.api.tag(tiny_images.root, *local_only.rsplit(":", 1))
        out, code, _ = asyncio.run(run_to_end(invocation(tiny_ref(local_only))))
        assert (out, code) == (b"tiny connector: spec\n", 0)
        with pytest.raises(ImageUnavailable, match=r"'always'"):
            asyncio.run(run_to_end(invocation(tiny_ref(local_only, pull="always"))))
    finally:
        client.api.remove_image(local_only)
        client.close()

    with pytest.raises(ConfigError, match="pull policy"):
        asyncio.run(run_to_end(invocation(tiny_ref(tiny_images.root, pull="sometimes"))))


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_unreachable_daemon_is_runtime_unavailable(
    monkeypatch: pytest.MonkeyPatch, tiny_images: Any
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    with pytest.raises(RuntimeUnavailable) as caught:
        asyncio.run(run_to_end(invocation(tiny_ref(tiny_images.root))))
    message = str(caught.value)
    assert "tcp://127.0.0.1:1" in message
    assert "DOCKER_HOST" in message
    assert "dockerd" in message
    assert caught.value.exit_code == 3
    lines = collect_garbage(dry_run=True)
    assert any(line.startswith("docker: skipped") for line in lines)


# --- a remote engine: DOCKER_HOST=tcp://... through a forwarder to the local socket ---------


class TcpToUnix:
    """Forward 127.0.0.1:<port> to the engine's unix socket, half-closes included."""

    def __init__(self, unix_path: str) -> None:
        self._unix_path = unix_path
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self._unix_path)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._stopped = True
        self._server.close()


@pytest.fixture
def engine_socket(docker_engine: None) -> str:
    """The local engine's unix socket, which the forwarders below put behind tcp or TLS."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"the forwarder needs a local engine socket, DOCKER_HOST is {host}")
    return host.removeprefix("unix://")


@pytest.fixture
def tcp_engine(engine_socket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    forwarder = TcpToUnix(engine_socket)
    address = f"tcp://127.0.0.1:{forwarder.port}"
    monkeypatch.setenv("DOCKER_HOST", address)
    yield address
    forwarder.close()


def check_files_and_stdin_eof(image_root: str) -> None:
    """A write through the engine DOCKER_HOST names: uploaded config, 3 MB of stdin, then EOF."""
    config = json.dumps({"password": SECRET}).encode()
    ref = tiny_ref(image_root, "cat /ferry/config.json; echo; cat; echo eof-seen >&2")
    payload = b"x" * 3_000_001

    async def scenario() -> tuple[bytes, int, list[str]]:
        runtime = DockerRuntime()
        logged: list[str] = []
        try:
            process = await runtime.start(
                invocation(ref, "write", {"config": config}), logged.append
            )
            assert process.stdin is not None
            await process.stdin.write(payload)
            await process.stdin.close()
            out = await read_all(process)
            return out, await process.wait(), logged
        finally:
            await runtime.close()

    out, code, logged = asyncio.run(scenario())
    assert code == 0
    assert out == config + b"\n" + payload
    assert logged == ["eof-seen"]


@pytest.mark.docker
def test_remote_engine_over_tcp_gets_files_and_stdin_eof(tiny_images: Any, tcp_engine: str) -> None:
    check_files_and_stdin_eof(tiny_images.root)


def make_tls_files(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, named as DOCKER_CERT_PATH
    expects them (ca.pem, cert.pem, key.pem) plus the server's pair."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=ferry-test-ca", "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=ferry-test-{name}",
                "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *extra)  # fmt: skip
    (directory / "client.pem").rename(directory / "cert.pem")
    (directory / "client-key.pem").rename(directory / "key.pem")


class TlsToUnix:
    """Serve TLS with client-certificate auth on 127.0.0.1:<port>, forwarding to the engine's unix
    socket: what a remote engine started with --tlsverify looks like to ferry."""

    def __init__(self, unix_path: str, certs: Path) -> None:
        self._unix_path = unix_path
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs / "ca.pem")
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.load_cert_chain(certs / "server.pem", certs / "server-key.pem")
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.port = 0
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self._unix_path)

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await source.read(1 << 16):
                    target.write(data)
                    await target.drain()
                if target.can_write_eof():
                    target.write_eof()  # the client's end of stdin reaches the engine
                else:
                    target.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for each in (writer, up_writer):
            each.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def tls_engine(
    engine_socket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """DOCKER_HOST is a TLS endpoint that demands a client certificate (DOCKER_TLS_VERIFY)."""
    make_tls_files(tmp_path)
    forwarder = TlsToUnix(engine_socket, tmp_path)
    address = f"tcp://127.0.0.1:{forwarder.port}"
    monkeypatch.setenv("DOCKER_HOST", address)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    yield address
    forwarder.close()


@pytest.mark.docker
def test_remote_engine_over_tls_with_client_certificates(tiny_images: Any, tls_engine: str) -> None:
    # The machine's REQUESTS_CA_BUNDLE (if any) must not replace DOCKER_CERT_PATH's CA.
    check_files_and_stdin_eof(tiny_images.root)


# --- gc -------------------------------------------------------------------------------------

GC_CHILD = """
import asyncio, sys, time
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef, RunLabels
from ferry.runtimes.docker.runtime import DockerRuntime

async def main():
    ref = ConnectorRef("docker", sys.argv[1], options=ConnectorOptions(env={"TINY": "sleep 3600"}))
    labels = RunLabels(run_id=sys.argv[2], connection="gc-test", role="source")
    process = await DockerRuntime().start(ConnectorInvocation(ref, "read", labels=labels), print)
    print(process.container_id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_gc_removes_containers_of_a_killed_ferry(tiny_images: Any) -> None:
    run_id = uuid.uuid4().hex
    child = subprocess.Popen(
        [sys.executable, "-c", GC_CHILD, tiny_images.root, run_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        container_id = child.stdout.readline().strip()
        assert container_id, "the child ferry did not start its container"
        # While the owner lives, gc leaves its container alone.
        assert not [line for line in collect_garbage(dry_run=True) if container_id[:12] in line]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert [c["Id"] for c in containers_of(run_id)] == [container_id]

    planned = [line for line in collect_garbage(dry_run=True) if container_id[:12] in line]
    assert len(planned) == 1
    assert planned[0].startswith("docker: would remove container ferry-gc-test-source-read-")
    assert f"owner process {child.pid} is gone" in planned[0]
    assert [c["Id"] for c in containers_of(run_id)] == [container_id]  # dry run: still there

    # Only the Docker collector: other engines' tests may be between killing and sweeping.
    done = [line for line in collect_docker(dry_run=False) if container_id[:12] in line]
    assert len(done) == 1
    assert done[0].startswith("docker: removed container")
    assert containers_of(run_id) == []


# --- the built connector images (scripts/build_images.py) ------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_source_faker_spec_check_discover(built_image: Callable[[str], str]) -> None:
    """Through the engine's one-shot commands, on one DockerRuntime."""
    from ferry.engine.commands import check, discover, fetch_spec

    ref = ConnectorRef("docker", built_image("source-faker"))
    config = {"count": 10, "seed": 1}

    async def scenario() -> tuple[Any, Any, Any]:
        runtime = DockerRuntime()
        try:
            spec = await fetch_spec(ref, runtime)
            status = await check(ref, config, runtime, spec=spec)
            catalog = await discover(ref, config, runtime, spec=spec)
        finally:
            await runtime.close()
        return spec, status, catalog

    spec, status, catalog = asyncio.run(scenario())
    assert "count" in spec.connectionSpecification["properties"]
    assert status.status == "SUCCEEDED"
    assert {"users", "products", "purchases"} <= {stream.name for stream in catalog.streams}


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_destination_null_echoes_states(built_image: Callable[[str], str]) -> None:
    catalog = json.dumps(
        {
            "streams": [
                {
                    "stream": {
                        "name": "s",
                        "json_schema": {},
                        "supported_sync_modes": ["full_refresh"],
                    },
                    "sync_mode": "full_refresh",
                    "destination_sync_mode": "append",
                }
            ]
        }
    ).encode()
    record = b'{"type":"RECORD","record":{"stream":"s","data":{"i":%d},"emitted_at":0}}\n'
    state = b'{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"n":%d},"stream_states":[]}}}\n'
    payload = b"".join(record % i + (state % i if i % 1000 == 999 else b"") for i in range(10_000))
    ref = ConnectorRef("docker", built_image("destination-null"))

    async def scenario() -> tuple[bytes, int]:
        runtime = DockerRuntime()
        try:
            inv = invocation(ref, "write", {"config": b"{}", "catalog": catalog})
            process = await runtime.start(inv, lambda _: None)
            assert process.stdin is not None

            async def feed() -> None:
                assert process.stdin is not None
                for start in range(0, len(payload), 65536):
                    await process.stdin.write(payload[start : start + 65536])
                await process.stdin.close()

            writer = asyncio.create_task(feed())
            out = await read_all(process)
            await writer
            return out, await process.wait()
        finally:
            await runtime.close()

    out, code = asyncio.run(scenario())
    assert code == 0
    echoed = [m.state for m in messages(out) if m.type == "STATE"]
    assert len(echoed) == 10
    assert echoed[-1].global_.shared_state == {"n": 9999}


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize(
    ("name", "greeting"), [("hello", b"Hello spec\n"), ("bonjour", b"Bonjour spec\n")]
)
def test_seed_images_run_their_own_entrypoint(
    built_image: Callable[[str], str], name: str, greeting: bytes
) -> None:
    out, code, _ = asyncio.run(run_to_end(invocation(ConnectorRef("docker", built_image(name)))))
    assert (out, code) == (greeting, 0)
