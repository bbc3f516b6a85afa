"""Docker relay mode against the real engine: wrapper, sandbox, relay and heartbeat containers.

Everything runs for real: the seed images through ferry's wrapper, FIFOs in the sandbox's volume,
relays over TCP from the docker bridge to ferry's relay listener. The waits only guard against
hangs; no assertion is on elapsed time except the heartbeat budget the design promises.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dockerkit import containers_of, docker_client, invocation

from ferry.engine import commands
from ferry.errors import ConfigError, ConnectorCrashed
from ferry.relay import (
    DOCKER_BRIDGE_HOST,
    ENV_SIDECAR_IMAGE,
    LOOPBACK_HOST,
    HeartbeatSettings,
    RelayListener,
    handshake_line,
    shared_listener,
)
from ferry.relay.wrapper import DEFAULT_GRACE
from ferry.runtimes import get_runtime
from ferry.runtimes.base import (
    OWNER_ID,
    ConnectorOptions,
    ConnectorRef,
)
from ferry.runtimes.docker.gc import collect_docker
from ferry.runtimes.docker.relay import (
    BUSY_TCP_STATES,
    ENV_RELAY_HOST,
    PART_LABEL,
    check_reachable,
    fifo_archive,
    relay_host,
    sandbox_command,
    start_relayed,
)
from ferry.runtimes.docker.runtime import DockerRuntime
from ferry.runtimes.owner import PID_LABEL

REPO = Path(__file__).resolve().parents[3]
HANG_GUARD = 120.0


# --- helpers --------------------------------------------------------------------------------


def relay_ref(image: str, *args: str, **options: Any) -> ConnectorRef:
    return ConnectorRef("docker", image, args=args, options=ConnectorOptions(relay=True, **options))


def volume_exists(name: str) -> bool:
    import docker.errors

    client = docker_client()
    try:
        client.api.inspect_volume(name)
    except docker.errors.NotFound:
        return False
    finally:
        client.close()
    return True


def generator_files(count: int) -> dict[str, bytes]:
    stream = {
        "stream": {"name": "stream_0", "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh",
        "destination_sync_mode": "append",
    }
    return {
        "config": json.dumps({"count": count, "state_every": 10_000}).encode(),
        "catalog": json.dumps({"streams": [stream]}).encode(),
    }


async def read_all(stdout: Any) -> bytes:
    chunks = []
    while chunk := await stdout.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def relay_images(built_image: Callable[[str], str]) -> dict[str, str]:
    names = ("hello", "bonjour", "no-entrypoint", "source-generator", "sidecar")
    return {name: built_image(name) for name in names}


# --- pure parts -----------------------------------------------------------------------------


def test_fifo_archive_holds_an_open_directory_and_fifos() -> None:
    with tarfile.open(fileobj=io.BytesIO(fifo_archive(reads_stdin=True))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["ferry/io"].isdir()
    assert members["ferry/io"].mode == 0o777
    for name in ("stdin", "stdout", "stderr"):
        assert members[f"ferry/io/{name}"].isfifo()
        assert members[f"ferry/io/{name}"].mode == 0o666
    with tarfile.open(fileobj=io.BytesIO(fifo_archive(reads_stdin=False))) as tar:
        assert "ferry/io/stdin" not in tar.getnames()


def test_sandbox_command_looks_for_the_relay_port_in_hex() -> None:
    argv = sandbox_command(8080)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[4:] == ["/ferry/io", "1F90", "30", "3"]
    assert "$(" not in argv[2]
    assert "$$" not in argv[2]
    assert "01" in BUSY_TCP_STATES  # established connections keep the sandbox alive


def test_relay_address_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = DockerRuntime()
    monkeypatch.delenv(ENV_RELAY_HOST, raising=False)
    assert asyncio.run(relay_host(runtime.engine, "host")) == LOOPBACK_HOST
    with pytest.raises(ConfigError, match="network: none"):
        asyncio.run(relay_host(runtime.engine, "none"))
    monkeypatch.setenv(ENV_RELAY_HOST, "10.1.2.3")
    assert asyncio.run(relay_host(runtime.engine, None)) == "10.1.2.3"
    monkeypatch.setenv(ENV_RELAY_HOST, "10.1.2.3:80")
    with pytest.raises(ConfigError, match=f"{ENV_RELAY_HOST}: a relay host must be"):
        asyncio.run(relay_host(runtime.engine, None))
    check_reachable(RelayListener(bind_host="0.0.0.0"), DOCKER_BRIDGE_HOST)
    check_reachable(RelayListener(bind_host="127.0.0.1"), LOOPBACK_HOST)
    with pytest.raises(ConfigError, match="FERRY_RELAY_BIND"):
        check_reachable(RelayListener(bind_host="127.0.0.1"), DOCKER_BRIDGE_HOST)


# --- the seed images through the wrapper ----------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize(("name", "greeting"), [("hello", "Hello"), ("bonjour", "Bonjour")])
def test_seed_images_through_the_wrapper_with_an_appended_argument(
    relay_images: dict[str, str], name: str, greeting: str
) -> None:
    image = relay_images[name]
    run_id = uuid.uuid4().hex

    async def scenario() -> tuple[bytes, int, bytes, int]:
        runtime = DockerRuntime()
        try:
            inv = invocation(relay_ref(image), run_id=run_id)
            alone = await start_relayed(runtime.engine, inv, lambda _: None, args=["World"])
            out, code = await read_all(alone.stdout), await alone.wait()
            # The same through the runtime: the block's arguments, then the protocol's.
            process = await runtime.start(invocation(relay_ref(image, "World")), lambda _: None)
            spec_out = await read_all(process.stdout)
            return out, code, spec_out, await process.wait()
        finally:
            await runtime.close()

    out, code, spec_out, spec_code = asyncio.run(scenario())
    assert (out, code) == (f"{greeting} World\n".encode(), 0)
    assert (spec_out, spec_code) == (f"{greeting} World spec\n".encode(), 0)
    assert containers_of(run_id) == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_image_without_airbyte_entrypoint_is_127_then_auto_derives_it(
    relay_images: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    image = relay_images["no-entrypoint"]

    async def scenario() -> tuple[str, Any]:
        runtime = get_runtime("docker")
        try:
            with pytest.raises(ConnectorCrashed) as caught:
                await commands.fetch_spec(relay_ref(image), runtime)
            with caplog.at_level(logging.INFO, logger="ferry.runtimes.docker.relay"):
                spec = await commands.fetch_spec(relay_ref(image, entrypoint="auto"), runtime)
            return str(caught.value), spec
        finally:
            await runtime.close()

    message, spec = asyncio.run(scenario())
    assert "exited with code 127" in message
    assert f"AIRBYTE_ENTRYPOINT is not set in image {image}" in message
    assert "entrypoint: auto" in message  # what to do about it
    assert spec.connectionSpecification["title"] == "Faker Source Spec"
    assert any(
        "entrypoint: auto runs" in r.getMessage()
        and "/opt/connector/bin/source-faker" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_explicit_entrypoint_and_a_non_root_image_user(
    relay_images: dict[str, str], tiny_images: Any
) -> None:
    """`entrypoint: <command>` is the wrapper's override; a connector running as another user
    (uid 1234) reads its uploaded config and writes the exit file in the shared directory."""
    script = 'cat "$3"; echo " uid=`id -u`"'
    lines: list[str] = []

    async def scenario() -> tuple[bytes, int, bytes, int]:
        runtime = DockerRuntime()
        try:
            explicit = relay_ref(relay_images["hello"], entrypoint="/bin/echo explicit")
            process = await runtime.start(invocation(explicit), lambda _: None)
            out, code = await read_all(process.stdout), await process.wait()
            ref = relay_ref(tiny_images.app_user, entrypoint="/connector.sh", env={"TINY": script})
            inv = invocation(ref, "check", {"config": b'{"k": 1}'})
            process = await runtime.start(inv, lines.append)
            app_out = await read_all(process.stdout)
            return out, code, app_out, await process.wait()
        finally:
            await runtime.close()

    out, code, app_out, app_code = asyncio.run(scenario())
    assert (out, code) == (b"explicit spec\n", 0)
    assert (app_out, app_code) == (b'{"k": 1} uid=1234\n', 0), lines
    assert not [line for line in lines if "cannot write" in line]


# --- the relay port -------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_layout_labels_and_a_wrong_token_beside_a_running_stream(
    relay_images: dict[str, str],
) -> None:
    """A stranger on the relay port is refused; the real stream goes on to its exact end."""
    count = 300_000
    run_id = uuid.uuid4().hex

    async def knock(listener: RelayListener, first_line: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK_HOST, listener.port)
        try:
            writer.write(first_line)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), HANG_GUARD)
        finally:
            writer.close()

    async def scenario() -> tuple[int, int, list[dict[str, Any]], list[bytes]]:
        runtime = DockerRuntime()
        try:
            inv = invocation(
                relay_ref(relay_images["source-generator"]),
                "read",
                generator_files(count),
                run_id,
            )
            process = await runtime.start(inv, lambda _: None)
            first = await process.stdout.read(1 << 16)
            containers = containers_of(run_id)
            listener = await shared_listener()
            answers = [
                await knock(listener, handshake_line("not-the-token", "stdout")),
                await knock(listener, b"FERRY-RELAY/1 bad token with spaces\n"),
                await knock(listener, b"GET /heartbeat/not-the-token HTTP/1.0\r\n\r\n"),
            ]
            out = first + await read_all(process.stdout)
            code = await process.wait()
            records = sum(1 for line in out.splitlines() if line.startswith(b'{"type":"RECORD"'))
            return records, code, containers, answers
        finally:
            await runtime.close()

    records, code, containers, answers = asyncio.run(scenario())
    assert (records, code) == (count, 0)
    assert answers[0] == b""
    assert answers[1] == b""
    assert answers[2].startswith(b"HTTP/1.1 410 ")
    parts = {c["Labels"][PART_LABEL]: c for c in containers}
    assert set(parts) == {"sandbox", "connector", "relay-stdout", "relay-stderr", "heartbeat"}
    for container in containers:
        labels = container["Labels"]
        assert labels["ferry.owner"] == OWNER_ID
        assert labels[PID_LABEL].isdigit()
        assert labels["ferry.role"] == "source"
    sandbox_id = parts["sandbox"]["Id"]
    for part, container in parts.items():
        if part != "sandbox":
            assert container["HostConfig"]["NetworkMode"] == f"container:{sandbox_id}"
    assert containers_of(run_id) == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_terminate_mid_stream_removes_every_container(relay_images: dict[str, str]) -> None:
    run_id = uuid.uuid4().hex

    async def scenario() -> None:
        runtime = DockerRuntime()
        try:
            inv = invocation(
                relay_ref(relay_images["source-generator"]),
                "read",
                generator_files(10**10),
                run_id,
            )
            process = await runtime.start(inv, lambda _: None)
            got = 0
            while got < 5_000_000:
                got += len(await process.stdout.read(1 << 20))
            await process.terminate(grace=2)
            await process.terminate(grace=2)  # idempotent
        finally:
            await runtime.close()

    asyncio.run(scenario())
    assert containers_of(run_id) == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_relay_sidecar_that_cannot_run_fails_the_run_at_once(
    relay_images: dict[str, str], tiny_images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar image without socat: the relays die before connecting, and ferry says so
    instead of waiting for the connection timeout."""
    monkeypatch.setenv(ENV_SIDECAR_IMAGE, tiny_images.root)  # busybox only, no socat
    run_id = uuid.uuid4().hex

    async def scenario() -> str:
        runtime = DockerRuntime()
        try:
            inv = invocation(relay_ref(relay_images["hello"]), run_id=run_id)
            process = await runtime.start(inv, lambda _: None)
            with pytest.raises(ConnectorCrashed) as caught:
                await asyncio.wait_for(read_all(process.stdout), HANG_GUARD)
            await process.terminate(grace=1)
            return str(caught.value)
        finally:
            await runtime.close()

    message = asyncio.run(scenario())
    assert "sidecar exited with code 127 before it connected" in message
    assert "socat" in message
    assert containers_of(run_id) == []


# --- ferry killed or frozen -----------------------------------------------------------------

KILL_CHILD = """
import asyncio, json, sys
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef, RunLabels
from ferry.runtimes.docker.runtime import DockerRuntime

async def main():
    ref = ConnectorRef("docker", sys.argv[1], options=ConnectorOptions(relay=True))
    files = json.loads(sys.argv[3])
    files = {name: text.encode() for name, text in files.items()}
    labels = RunLabels(run_id=sys.argv[2], connection="relay-kill", role="source")
    process = await DockerRuntime().start(ConnectorInvocation(ref, "read", files, labels), print)
    got = 0
    while chunk := await process.stdout.read(1 << 20):
        got += len(chunk)
        if got > 5_000_000:
            print("streaming", flush=True)
            got = -(10**18)

asyncio.run(main())
"""


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_ferry_gone_every_container_exits_within_the_heartbeat_budget(
    relay_images: dict[str, str], how: signal.Signals
) -> None:
    """SIGKILL closes ferry's sockets (the relays break at once); SIGSTOP keeps them open, so
    only the heartbeat notices. Either way every container exits within the heartbeat budget
    plus the wrapper's grace (+10 s), the sandbox's volume goes with them and gc finds nothing."""
    run_id = uuid.uuid4().hex
    files = {k: v.decode() for k, v in generator_files(10**10).items()}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILL_CHILD,
            relay_images["source-generator"],
            run_id,
            json.dumps(files),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        while (line := child.stdout.readline()) and line.strip() != "streaming":
            pass
        assert line.strip() == "streaming", "the child ferry never streamed"
        containers = containers_of(run_id)
        assert len(containers) == 5
        sandbox = next(c for c in containers if c["Labels"][PART_LABEL] == "sandbox")
        volumes = [m["Name"] for m in sandbox["Mounts"] if m["Type"] == "volume"]
        assert len(volumes) == 1
        child.send_signal(how)
        if how == signal.SIGKILL:
            child.wait()
        stopped = time.monotonic()
        budget = HeartbeatSettings().give_up_within() + DEFAULT_GRACE + 10
        while alive := containers_of(run_id):
            names = [f"{c['Labels'][PART_LABEL]} ({c['State']})" for c in alive]
            assert time.monotonic() - stopped < budget, (
                f"still there {budget:.0f}s after {how.name}: {names}"
            )
            time.sleep(0.5)
        print(f"every container gone {time.monotonic() - stopped:.1f}s after {how.name}")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert not volume_exists(volumes[0])
    # Nothing is left for `ferry gc` (only the Docker collector, and only a dry run: other
    # suites' orphans may be waiting for their own sweep at this moment).
    assert not [line for line in collect_docker(dry_run=True) if run_id in line]
    assert not [line for line in collect_docker(dry_run=True) if "relay-kill" in line]
