"""Commands of the sidecar containers: the relays (one per channel) and the heartbeat.

Every connector run through the wrapper gets, next to it and sharing its I/O directory:
- `relay-stdout`, `relay-stderr` (FIFO -> TCP) and, when the connector reads stdin,
  `relay-stdin` (TCP -> FIFO). Each connects to ferry's ONE relay listener port and first sends
  the handshake line `FERRY-RELAY/1 <token> <channel>\\n`; the per-connector token (not a port of
  a pool) tells ferry which connector and channel the bytes belong to. The pump is
  `socat -u -b262144` (socat's default 8 KiB buffer moves about a quarter of the bytes); the TCP
  socket has keepalive on. A relay exits when its channel ends: FIFO EOF for stdout/stderr, TCP EOF
  for stdin (closing the FIFO gives the connector EOF), and once the wrapper has written its exit
  code a watcher releases a relay still waiting to open its FIFO (and stops the stdin relay).
- `heartbeat`: polls `GET /heartbeat/<token>` on the same port (each probe bounded by `timeout`;
  busybox `wget -T` is not trusted). After `max_failures` failed probes in a row, or a 410, it
  writes the termination marker, and the wrapper stops the connector. When the wrapper has written
  its exit code, the heartbeat reports it (`GET /exit/<token>/<code>`) and exits, so ferry learns
  the code without reading the container's status. A failed report is retried (3 tries), except
  after the termination marker or a 410: ferry is gone or withdrew the token (it learnt how the
  run ended), so it is tried once.

The sidecar image needs `sh`, `socat`, `timeout`, `wget`, `grep`, `sleep`, `mkfifo`, `kill`
(busybox plus socat is enough). As for the wrapper, no generated command contains `$(` or `$$`.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ferry.errors import ConfigError, InternalError
from ferry.relay.layout import IO_DIR, STDERR, STDIN, STDOUT, check_portable
from ferry.relay.wrapper import DEFAULT_SHELL, load_script

# The image the sidecars run in; runtimes may pass another one (it needs busybox and socat).
SIDECAR_IMAGE = "ferry-test/sidecar:dev"
ENV_SIDECAR_IMAGE = "FERRY_SIDECAR_IMAGE"  # every runtime with sidecars reads it
RELAY_BUFFER = 262144
RELAY_CONNECT_RETRIES = 30
RELAY_CHANNELS = (STDOUT, STDERR, STDIN)


def sidecar_image(chosen: str | None = None) -> str:
    """The image sidecars run in: `chosen`, else $FERRY_SIDECAR_IMAGE, else SIDECAR_IMAGE."""
    return chosen or os.environ.get(ENV_SIDECAR_IMAGE) or SIDECAR_IMAGE


def check_relay_host(host: str, where: str = "relay host") -> None:
    """The host sidecars connect to must be a host name or an IPv4 address (as socat takes it)."""
    if not host or any(c in host for c in " :,!'\"\\()[]{}"):
        raise ConfigError(f"{where}: a relay host must be a host name or an IPv4 address: {host!r}")


@dataclass(frozen=True)
class RelayEndpoint:
    """Where containers reach ferry's relay listener (the advertised host, the listener's port)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        check_relay_host(self.host)
        if not 0 < self.port < 65536:
            raise InternalError(f"relay port out of range: {self.port}")


@dataclass(frozen=True)
class HeartbeatSettings:
    """How the heartbeat sidecar polls ferry. The defaults give up within `give_up_within()` (< 30 s)."""

    interval: float = 3.0  # between probes
    probe_timeout: int = 4  # each probe is killed after this many seconds
    max_failures: int = 3  # failed probes in a row before the marker is written
    tick: float = 0.25  # how often the exit file is looked for
    linger: float = 60.0  # after the marker, how long to wait for the wrapper's exit code

    def __post_init__(self) -> None:
        if self.tick <= 0 or self.interval < self.tick:
            raise InternalError("heartbeat tick must be > 0 and interval >= tick")
        if self.probe_timeout < 1 or self.max_failures < 1:
            raise InternalError("heartbeat probe_timeout and max_failures must be >= 1")

    @property
    def ticks_per_probe(self) -> int:
        return max(1, round(self.interval / self.tick))

    @property
    def linger_ticks(self) -> int:
        return max(1, math.ceil(self.linger / self.tick))

    def give_up_within(self) -> float:
        """Upper bound of the time from ferry vanishing to the termination marker being written.

        The probe in flight when ferry vanishes may have just succeeded; then `max_failures`
        probes fail, each taking at most `probe_timeout` plus one period between probes.
        """
        period = self.ticks_per_probe * self.tick
        return period + self.max_failures * (self.probe_timeout + period)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@functools.cache
def relay_script() -> str:
    return load_script("sidecar-relay.sh")


@functools.cache
def heartbeat_script() -> str:
    return load_script("sidecar-heartbeat.sh")


def _check_token(token: str) -> None:
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        raise InternalError("relay tokens are url-safe base64 (letters, digits, '-', '_')")


def relay_sidecar_command(
    channel: str,
    *,
    token: str,
    endpoint: RelayEndpoint,
    io_dir: str = IO_DIR,
    buffer_size: int = RELAY_BUFFER,
    connect_retries: int = RELAY_CONNECT_RETRIES,
    shell: Sequence[str] = DEFAULT_SHELL,
) -> list[str]:
    """The command of the relay sidecar for `channel` (stdout, stderr or stdin)."""
    if channel not in RELAY_CHANNELS:
        raise InternalError(f"unknown relay channel {channel!r}; expected one of {RELAY_CHANNELS}")
    _check_token(token)
    argv = [
        *shell,
        "-c",
        relay_script(),
        "ferry-relay",
        channel,
        io_dir,
        endpoint.host,
        str(endpoint.port),
        token,
        str(buffer_size),
        str(connect_retries),
    ]
    check_portable(argv, "a relay sidecar's command")
    return argv


def heartbeat_sidecar_command(
    *,
    token: str,
    endpoint: RelayEndpoint,
    io_dir: str = IO_DIR,
    settings: HeartbeatSettings | None = None,
    shell: Sequence[str] = DEFAULT_SHELL,
) -> list[str]:
    """The command of the heartbeat sidecar."""
    _check_token(token)
    s = settings or HeartbeatSettings()
    argv = [
        *shell,
        "-c",
        heartbeat_script(),
        "ferry-heartbeat",
        io_dir,
        endpoint.host,
        str(endpoint.port),
        token,
        str(s.ticks_per_probe),
        _number(s.tick),
        str(s.probe_timeout),
        str(s.max_failures),
        str(s.linger_ticks),
    ]
    check_portable(argv, "the heartbeat sidecar's command")
    return argv


def sidecar_commands(
    *,
    token: str,
    endpoint: RelayEndpoint,
    reads_stdin: bool,
    io_dir: str = IO_DIR,
    heartbeat: HeartbeatSettings | None = None,
    shell: Sequence[str] = DEFAULT_SHELL,
) -> dict[str, list[str]]:
    """Container name -> command for every sidecar of one connector run.

    Names: `relay-stdout`, `relay-stderr`, `relay-stdin` (only if `reads_stdin`), `heartbeat`.
    """
    channels = [STDOUT, STDERR] + ([STDIN] if reads_stdin else [])
    commands = {
        f"relay-{channel}": relay_sidecar_command(
            channel, token=token, endpoint=endpoint, io_dir=io_dir, shell=shell
        )
        for channel in channels
    }
    commands["heartbeat"] = heartbeat_sidecar_command(
        token=token, endpoint=endpoint, io_dir=io_dir, settings=heartbeat, shell=shell
    )
    return commands
