"""`ferry.spec`, `ferry.check`, `ferry.discover` (and their async forms): one connector, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.api._logs import mask_ferry_logs, secrets_masked
from ferry.api._portal import LoopThread
from ferry.engine import commands
from ferry.engine.config import load_config, resolve_env
from ferry.engine.secrets import mask
from ferry.errors import ConfigError
from ferry.protocol import to_builtins
from ferry.runtimes.base import RUNTIME_NAMES, ConnectorRef
from ferry.runtimes.resolve import resolve_reference

Config = Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class CheckResult:
    """A connector's verdict on a config."""

    succeeded: bool
    message: str | None = None


def connector_ref(connector: str, runtime: str) -> ConnectorRef:
    """CONNECTOR as the CLI takes it; `runtime` applies to a reference without a prefix."""
    if runtime not in RUNTIME_NAMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIME_NAMES)}")
    ref = resolve_reference(connector, default_runtime=runtime)
    mask_ferry_logs(f"ferry.connector.{commands.connector_name(ref)}")
    return ref


def connector_config(config: Config) -> dict[str, Any]:
    """A config file (JSON or YAML) or a mapping; `${NAME}` reads the environment in both."""
    if isinstance(config, str | Path):
        return load_config(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping or a file path, not {type(config).__name__}")
    return dict(resolve_env(dict(config), "config"))


async def async_spec(connector: str, *, runtime: str = "local") -> dict[str, Any]:
    with secrets_masked():
        spec = await commands.fetch_spec(connector_ref(connector, runtime), refresh_cache=True)
    return dict(to_builtins(spec))


def spec(connector: str, *, runtime: str = "local") -> dict[str, Any]:
    """The connector's specification (its config's JSON Schema in `connectionSpecification`)."""
    with LoopThread() as portal:
        return portal.call(async_spec(connector, runtime=runtime))


async def async_check(connector: str, config: Config, *, runtime: str = "local") -> CheckResult:
    with secrets_masked():
        ref = connector_ref(connector, runtime)
        status = await commands.check(ref, connector_config(config))
    message = None if status.message is None else mask(status.message)
    return CheckResult(status.status == "SUCCEEDED", message)


def check(connector: str, config: Config, *, runtime: str = "local") -> CheckResult:
    """Whether the connector accepts `config` (validated against its spec first: a config that
    does not match raises ConfigError; a connector that says FAILED is a CheckResult)."""
    with LoopThread() as portal:
        return portal.call(async_check(connector, config, runtime=runtime))


async def async_discover(
    connector: str, config: Config, *, runtime: str = "local"
) -> dict[str, Any]:
    with secrets_masked():
        ref = connector_ref(connector, runtime)
        catalog = await commands.discover(ref, connector_config(config))
    return dict(to_builtins(catalog))


def discover(connector: str, config: Config, *, runtime: str = "local") -> dict[str, Any]:
    """The source's catalog: `{"streams": [{"name", "json_schema", ...}, ...]}`."""
    with LoopThread() as portal:
        return portal.call(async_discover(connector, config, runtime=runtime))
