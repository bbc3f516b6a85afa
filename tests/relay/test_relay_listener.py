"""The relay listener with real sockets: handshakes, channels, failures, the heartbeat endpoint."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
from wrapperkit import until

from ferry.errors import ConnectorCrashed, RuntimeUnavailable
from ferry.relay import (
    RelayListener,
    RelayRegistration,
    exit_path,
    handshake_line,
    heartbeat_path,
    request_status,
    shared_listener,
)
from ferry.relay.listener import MAX_FIRST_LINE

pytestmark = pytest.mark.timeout(60)


def run(test: Callable[[RelayListener], Awaitable[None]], **options: float) -> None:
    async def main() -> None:
        async with RelayListener(bind_host="127.0.0.1", **options) as listener:  # type: ignore[arg-type]
            await test(listener)

    asyncio.run(main())


class Client:
    """A fake relay sidecar: a plain TCP client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, listener: RelayListener, first: bytes = b"", *, token: str = "", channel: str = ""
    ) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(handshake_line(token, channel) if token else first)
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def eof(self) -> None:
        self.writer.write_eof()
        await self.writer.drain()

    async def closed_by_ferry(self) -> bool:
        """True once ferry closed the connection (EOF or reset), having sent nothing."""
        try:
            return await self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    def reset(self) -> None:
        """Vanish abruptly: RST instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def read_all(reg: RelayRegistration) -> bytes:
    chunks = []
    while chunk := await reg.stdout.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def http_get(listener: RelayListener, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: Wget\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


def test_stdout_stderr_and_exit_code() -> None:
    lines: list[str] = []

    async def test(listener: RelayListener) -> None:
        reg = listener.register("source-x", reads_stdin=False, log=lines.append)
        out = await Client.connect(listener, token=reg.token, channel="stdout")
        err = await Client.connect(listener, token=reg.token, channel="stderr")
        payload = b"".join(b'{"type":"RECORD","i":%d}\n' % i for i in range(100_000))
        await out.send(payload)
        await out.eof()
        await err.send(b"first\r\nsecond\n\xff broken utf8\nno newline at the end")
        await err.eof()
        assert await read_all(reg) == payload
        assert reg.stdout.eof
        await reg.wait_stderr()
        assert lines == ["first", "second", "\ufffd broken utf8", "no newline at the end"]
        assert await http_get(listener, f"/exit/{reg.token}/7") == (200, b"ok\n")
        assert await reg.wait_exit(5) == 7
        assert reg.connected() == {"stdout": True, "stderr": True}

    run(test)


def test_data_sent_with_the_handshake_is_kept() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("s", reads_stdin=False, log=print)
        client = await Client.connect(listener, handshake_line(reg.token, "stdout") + b"glued\n")
        await client.eof()
        assert await read_all(reg) == b"glued\n"

    run(test)


def test_stdin_write_and_eof() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("dest", reads_stdin=True, log=print)
        assert reg.stdin is not None
        client = await Client.connect(listener, token=reg.token, channel="stdin")
        data = b"y" * (8 << 20)  # far more than the socket buffers: exercises backpressure
        received = asyncio.ensure_future(client.reader.read())
        await reg.stdin.write(data)
        await reg.stdin.close()
        await reg.stdin.close()  # idempotent
        assert await received == data

    run(test)


def test_stdin_closed_before_the_relay_connects() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("dest", reads_stdin=True, log=print)
        assert reg.stdin is not None
        await reg.stdin.close()
        client = await Client.connect(listener, token=reg.token, channel="stdin")
        assert await client.reader.read() == b""

    run(test)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (b"FERRY-RELAY/1 nosuchtoken stdout\n", "unknown or expired token"),
        (b"FERRY-RELAY/2 tok stdout\n", "malformed handshake"),
        (b"FERRY-RELAY/1 tok stdout extra\n", "malformed handshake"),
        (b"FERRY-RELAY/1 tok sideways\n", "unknown channel"),
        (b"FERRY-RELAY/1 t%k stdout\n", "malformed token"),
        (b"\xff\xfe\n", "not ASCII"),
        (b"A" * (MAX_FIRST_LINE + 10), "longer than"),
        (b"FERRY-RELAY/1 " + b"a" * MAX_FIRST_LINE + b" stdout\n", "longer than"),
    ],
)
def test_bad_handshakes_are_refused_and_logged(
    first: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(listener: RelayListener) -> None:
        listener.register("s", reads_stdin=False, log=print)
        client = await Client.connect(listener, first)
        assert await client.closed_by_ferry()

    with caplog.at_level(logging.WARNING, logger="ferry.relay"):
        run(test)
    assert any(reason in r.getMessage() for r in caplog.records), caplog.text


def test_slow_handshake_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("s", reads_stdin=False, log=print)
        client = await Client.connect(listener, b"FERRY-RELAY/1 " + reg.token.encode())
        assert await client.closed_by_ferry()  # never sent the end of the line
        assert not reg.stdout.connected

    with caplog.at_level(logging.WARNING, logger="ferry.relay"):
        run(test, handshake_timeout=0.2)
    assert "no complete first line within 0.2s" in caplog.text


def test_duplicate_and_unexpected_channels_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print)
        first = await Client.connect(listener, token=reg.token, channel="stdout")
        second = await Client.connect(listener, token=reg.token, channel="stdout")
        assert await second.closed_by_ferry()
        stdin = await Client.connect(listener, token=reg.token, channel="stdin")
        assert await stdin.closed_by_ferry()
        await first.send(b"still attached\n")
        await first.eof()
        assert await read_all(reg) == b"still attached\n"

    with caplog.at_level(logging.WARNING, logger="ferry.relay"):
        run(test)
    assert "stdout of src is already attached" in caplog.text
    assert "src does not read stdin" in caplog.text


def test_channel_that_never_connects_fails() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=True, log=print, connect_timeout=0.2)
        with pytest.raises(ConnectorCrashed, match="stdout relay did not connect to ferry within"):
            await reg.stdout.read(100)
        assert reg.stdin is not None
        with pytest.raises(ConnectorCrashed, match="stdin relay did not connect"):
            await reg.stdin.write(b"x")
        with pytest.raises(ConnectorCrashed, match="stderr relay did not connect"):
            await reg.wait_stderr()
        # A relay arriving after the deadline is refused.
        late = await Client.connect(listener, token=reg.token, channel="stdout")
        assert await late.closed_by_ferry()

    run(test)


def test_connect_timeout_can_be_extended() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print, connect_timeout=None)
        reading = asyncio.ensure_future(reg.stdout.read(10))
        await asyncio.sleep(0.05)
        reg.set_connect_timeout(0.1)
        with pytest.raises(ConnectorCrashed, match=r"within 0\.1s"):
            await reading

    run(test)


def test_reset_mid_stream_fails_the_read() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print)
        client = await Client.connect(listener, token=reg.token, channel="stdout")
        await client.send(b"partial")
        reading = asyncio.ensure_future(read_all(reg))
        await asyncio.sleep(0.05)
        client.reset()
        with pytest.raises(ConnectorCrashed, match="stdout relay connection broke"):
            await reading
        with pytest.raises(ConnectorCrashed):  # and stays failed
            await reg.stdout.read(10)

    run(test)


def test_reset_fails_stdin_writes() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("dest", reads_stdin=True, log=print)
        assert reg.stdin is not None
        client = await Client.connect(listener, token=reg.token, channel="stdin")
        client.reset()
        stdin = reg.stdin

        async def flood() -> None:
            for _ in range(1000):
                await stdin.write(b"z" * 65536)

        with pytest.raises(ConnectorCrashed, match="stopped reading its input"):
            await flood()
        await reg.stdin.close()  # never raises

    async def test_wrapper(listener: RelayListener) -> None:
        await asyncio.wait_for(test(listener), 30)

    run(test_wrapper)


def test_stderr_reset_is_reported() -> None:
    async def test(listener: RelayListener) -> None:
        lines: list[str] = []
        reg = listener.register("src", reads_stdin=False, log=lines.append)
        client = await Client.connect(listener, token=reg.token, channel="stderr")
        await client.send(b"a line\n")
        await until(lambda: lines, "the stderr line")
        client.reset()
        with pytest.raises(ConnectorCrashed, match="stderr relay connection broke"):
            await reg.wait_stderr()
        assert lines == ["a line"]

    run(test)


def test_heartbeat_endpoint_and_unregister(caplog: pytest.LogCaptureFixture) -> None:
    tokens: list[str] = []

    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print)
        tokens.append(reg.token)
        reading = asyncio.ensure_future(reg.stdout.read(10))
        assert await http_get(listener, f"/heartbeat/{reg.token}") == (200, b"ok\n")
        assert reg.last_heartbeat is not None
        assert (await http_get(listener, "/heartbeat/unknown"))[0] == 410
        assert (await http_get(listener, f"/exit/{reg.token}/256"))[0] == 400
        assert (await http_get(listener, f"/exit/{reg.token}/x"))[0] == 400
        assert (await http_get(listener, "/elsewhere"))[0] == 404
        assert reg.exit_code is None
        listener.unregister(reg.token)
        listener.unregister(reg.token)  # idempotent
        assert (await http_get(listener, f"/heartbeat/{reg.token}"))[0] == 410
        assert (await http_get(listener, f"/exit/{reg.token}/0"))[0] == 410
        with pytest.raises(ConnectorCrashed, match="registration was withdrawn"):
            await reading
        late = await Client.connect(listener, token=reg.token, channel="stdout")
        assert await late.closed_by_ferry()

    with caplog.at_level(logging.WARNING, logger="ferry.relay"):
        run(test)
    assert "unknown or expired token" in caplog.text
    assert tokens[0] not in caplog.text  # tokens are secrets: logged redacted


def test_the_pumps_requests_get_the_listeners_answers() -> None:
    """`request_status`, the single pod's pump's heartbeat and exit report, against the real
    endpoint; None from a port where nobody answers and from a peer that never answers."""

    async def test(listener: RelayListener) -> None:
        reg = listener.register("pump", reads_stdin=True, log=print)
        host, port = "127.0.0.1", listener.port
        assert await request_status(host, port, heartbeat_path(reg.token), 2) == 200
        assert await request_status(host, port, exit_path(reg.token, 3), 2) == 200
        assert reg.exit_code == 3
        assert await request_status(host, port, heartbeat_path("unknown"), 2) == 410
        with socket.socket() as silent:  # accepts (the kernel's backlog), never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            closed = silent.getsockname()[1]
            assert await request_status(host, closed, "/", 0.2) is None
        assert await request_status(host, closed, "/", 2) is None  # refused

    run(test)


def test_abort_wakes_readers_and_writers() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("dest", reads_stdin=True, log=print)
        out = await Client.connect(listener, token=reg.token, channel="stdout")
        reading = asyncio.ensure_future(reg.stdout.read(10))
        waiting = asyncio.ensure_future(reg.wait_stderr())
        await asyncio.sleep(0.05)
        reg.abort(ConnectorCrashed("the pod was evicted"))
        for task in (reading, waiting):
            with pytest.raises(ConnectorCrashed, match="evicted"):
                await task
        assert reg.stdin is not None
        with pytest.raises(ConnectorCrashed, match="evicted"):
            await reg.stdin.write(b"x")
        assert await out.closed_by_ferry()

    run(test)


def test_no_exit_code_reported_is_none() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print)
        assert await reg.wait_exit(0.05) is None

    run(test)


def test_accepted_sockets_have_keepalive() -> None:
    async def test(listener: RelayListener) -> None:
        reg = listener.register("src", reads_stdin=False, log=print)
        await Client.connect(listener, token=reg.token, channel="stdout")
        await until(lambda: reg.stdout.connected, "the stdout relay")
        sock = reg.stdout._sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000

    run(test)


def test_many_connectors_share_one_port() -> None:
    async def test(listener: RelayListener) -> None:
        regs = [listener.register(f"c{i}", reads_stdin=False, log=print) for i in range(20)]
        assert len({r.token for r in regs}) == 20
        clients = [await Client.connect(listener, token=r.token, channel="stdout") for r in regs]
        for i, client in enumerate(clients):
            await client.send(b"from %d\n" % i)
            await client.eof()
        results = await asyncio.gather(*(read_all(r) for r in regs))
        assert results == [b"from %d\n" % i for i in range(20)]

    run(test)


def test_close_fails_everything_pending() -> None:
    async def test() -> None:
        listener = RelayListener(bind_host="127.0.0.1")
        await listener.start()
        reg = listener.register("src", reads_stdin=False, log=print)
        reading = asyncio.ensure_future(reg.stdout.read(10))
        await asyncio.sleep(0.01)
        await listener.close()
        await listener.close()
        with pytest.raises(ConnectorCrashed, match="listener was closed"):
            await reading
        with pytest.raises(RuntimeUnavailable):
            await listener.start()

    asyncio.run(test())


def test_shared_listener_is_one_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_RELAY_BIND", "127.0.0.1")

    async def test() -> None:
        first, second = await asyncio.gather(shared_listener(), shared_listener())
        assert first is second
        assert first.bind_host == "127.0.0.1"
        assert first.endpoint("172.17.0.1").port == first.port
        await first.close()
        third = await shared_listener()
        assert third is not first
        await third.close()

    asyncio.run(test())


def test_unbindable_port_is_runtime_unavailable() -> None:
    async def test() -> None:
        async with RelayListener(bind_host="127.0.0.1") as taken:
            other = RelayListener(bind_host="127.0.0.1", port=taken.port)
            with pytest.raises(RuntimeUnavailable, match="cannot listen for relays"):
                await other.start()

    asyncio.run(test())
