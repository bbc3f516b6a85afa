"""Connection files: the YAML that names a source, a destination and the streams to sync.

Parsing is strict (an unknown key is an error, not a silent no-op) and pure apart from reading
the file, so every rule is tested on plain data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ferry.engine.config import load_yaml
from ferry.errors import ConfigError
from ferry.protocol import StreamSelection
from ferry.runtimes.base import RUNTIME_NAMES
from ferry.runtimes.options import ConnectorOptions, PodLayout, describe, unset_nulls

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _ConnectorBlock(ConnectorOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A connector block: the reference and its config, then the connector's options."""

    connector: str
    config: dict[str, Any] = msgspec.field(default_factory=dict)

    def options(self) -> ConnectorOptions:
        return ConnectorOptions(**{name: getattr(self, name) for name in _OPTION_FIELDS})


_OPTION_FIELDS = ConnectorOptions.__struct_fields__


class _TimeoutsBlock(_Strict):
    source_idle: str | int | float | None = None
    destination_idle: str | int | float | None = None


class _ConnectionFile(_Strict):
    name: str
    source: _ConnectorBlock
    destination: _ConnectorBlock
    runtime: str = "local"
    streams: list[StreamSelection] | None = None
    kubernetes: PodLayout = msgspec.field(default_factory=PodLayout)
    timeouts: _TimeoutsBlock | None = None


# Airbyte fails a sync whose source is silent for 3 hours (its heartbeat window): a healthy slow
# source (a big query before the first row, an API rate limit) can be that quiet.
DEFAULT_IDLE_SECONDS = 3 * 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class IdleTimeouts:
    """How long each side may give no sign of life before the attempt fails (seconds)."""

    source: float = DEFAULT_IDLE_SECONDS
    destination: float = DEFAULT_IDLE_SECONDS


def parse_duration(value: object, where: str) -> float:
    """Seconds from `5`, `90`, `2.5`, `30s`, `30m` or `2h`; ConfigError naming `where`."""
    match = _DURATION.match(str(value)) if isinstance(value, str | int | float) else None
    if match is None or isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a duration (like 90, 30s, 30m or 2h)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: a duration must be more than 0 seconds")
    return seconds


@dataclass(frozen=True)
class Endpoint:
    """One side of a connection: the connector reference, its raw config and its options."""

    reference: str
    config: dict[str, Any]
    options: ConnectorOptions


@dataclass(frozen=True)
class Connection:
    name: str
    runtime: str
    source: Endpoint
    destination: Endpoint
    streams: list[StreamSelection] | None
    path: Path | None = None
    kubernetes: PodLayout = field(default_factory=PodLayout)  # layout: single-pod, ...
    timeouts: IdleTimeouts = field(default_factory=IdleTimeouts)


def load_connection(path: Path) -> Connection:
    """Read and validate a connection file; every problem is a ConfigError naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"connection file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read connection file {path}: {e.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"connection file {path} is not valid YAML: {e}") from None
    return parse_connection(data, origin=str(path), path=path)


def parse_connection(
    data: Any, *, origin: str = "connection", path: Path | None = None
) -> Connection:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with name, source and destination")
    try:
        raw = msgspec.convert(_kubernetes_nulls_unset(data), _ConnectionFile)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{origin}: {describe(e)}") from None
    if not _NAME.match(raw.name):
        raise ConfigError(
            f"{origin}: name {raw.name!r} must be 1-63 letters, digits, '.', '_' or '-'"
        )
    if raw.runtime not in RUNTIME_NAMES:
        raise ConfigError(
            f"{origin}: runtime {raw.runtime!r} is not one of {', '.join(RUNTIME_NAMES)}"
        )
    streams = raw.streams
    if streams is not None:
        for stream in streams:
            _check_sync_mode(stream, origin)
        _reject_duplicates(streams, origin)
    return Connection(
        name=raw.name,
        runtime=raw.runtime,
        source=_endpoint(raw.source, f"{origin}: source"),
        destination=_endpoint(raw.destination, f"{origin}: destination"),
        streams=streams,
        path=path,
        kubernetes=raw.kubernetes,
        timeouts=_timeouts(raw.timeouts, origin),
    )


def _kubernetes_nulls_unset(data: dict[str, Any]) -> dict[str, Any]:
    """The file with the null keys of its `kubernetes:` blocks left out: a key set to null
    keeps its default there (`labels:` with nothing after it)."""
    data = {**data, "kubernetes": unset_nulls(data.get("kubernetes"))}
    for role in ("source", "destination"):
        block = data.get(role)
        if isinstance(block, dict) and "kubernetes" in block:
            data[role] = {**block, "kubernetes": unset_nulls(block["kubernetes"])}
    return data


def _timeouts(block: _TimeoutsBlock | None, origin: str) -> IdleTimeouts:
    if block is None:
        return IdleTimeouts()
    default = IdleTimeouts()
    return IdleTimeouts(
        source=default.source
        if block.source_idle is None
        else parse_duration(block.source_idle, f"{origin}: timeouts.source_idle"),
        destination=default.destination
        if block.destination_idle is None
        else parse_duration(block.destination_idle, f"{origin}: timeouts.destination_idle"),
    )


def _endpoint(block: _ConnectorBlock, where: str) -> Endpoint:
    if not block.connector.strip():
        raise ConfigError(f"{where}: connector is empty")
    return Endpoint(block.connector.strip(), block.config, block.options())


def _check_sync_mode(stream: StreamSelection, origin: str) -> None:
    if stream.sync_mode not in (None, "full_refresh", "incremental"):
        raise ConfigError(
            f"{origin}: stream {stream.name!r}: sync_mode {stream.sync_mode!r} is not "
            "full_refresh or incremental"
        )


def _reject_duplicates(streams: list[StreamSelection], origin: str) -> None:
    seen: set[tuple[str, str | None]] = set()
    for stream in streams:
        key = (stream.name, stream.namespace)
        if key in seen:
            raise ConfigError(f"{origin}: stream {stream.name!r} is listed twice")
        seen.add(key)
