"""Connector config files (JSON or YAML) and `${NAME}` environment references in their values.

In any string value of a config, `${NAME}` is replaced by the environment variable NAME (NAME is
letters, digits and `_`, not starting with a digit); an unset variable is an error. Write
`$${NAME}` for a literal `${NAME}`. Any other `$` is left as it is. Keys are never expanded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ferry.errors import ConfigError

# `$${NAME}` (escaped, group 1) or `${NAME}` (group 2).
_REFERENCE = re.compile(r"\$(\$\{[A-Za-z_][A-Za-z0-9_]*\})|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _JsonCompatibleLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: `start_date: 2024-01-01` stays the string a JSON
    config would hold (a date object would not even serialise back to JSON)."""


_JsonCompatibleLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """The one YAML reader of every config file ferry reads (connection files, --config
    files): safe, and every scalar stays what JSON could hold (dates stay strings as written)."""
    return yaml.load(text, Loader=_JsonCompatibleLoader)  # a SafeLoader


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a JSON or YAML object from `path` and resolve its `${NAME}` references."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    config = parse_config(text, str(path))
    try:
        resolved: dict[str, Any] = resolve_env(config, "config", env)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return resolved


def parse_config(text: str, origin: str) -> dict[str, Any]:
    """A JSON or YAML mapping; errors name `origin` and the line where parsing failed."""
    value: Any
    if text.lstrip().startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{origin} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
    else:
        try:
            value = load_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"{origin} is not valid JSON or YAML: {_yaml_problem(error)}"
            ) from None
    if not isinstance(value, dict):
        kind = "empty" if value is None else f"a {type(value).__name__}"
        raise ConfigError(f"{origin} must hold an object (a mapping of fields), but it is {kind}")
    try:
        json.dumps(value)  # connectors get JSON: YAML's binary, sets, ... cannot be passed on
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{origin} holds a value that cannot be written as JSON: {error}"
        ) from None
    return value


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(error)


def resolve_env(value: Any, where: str = "config", env: Mapping[str, str] | None = None) -> Any:
    """A copy of `value` with `${NAME}` replaced in every string; ConfigError lists unset names."""
    environment = os.environ if env is None else env
    missing: list[str] = []
    resolved = _resolve(value, where, environment, missing)
    if missing:
        raise ConfigError(
            "environment variable not set: "
            + "; ".join(missing)
            + " (set it, or write $${NAME} for a literal ${NAME})"
        )
    return resolved


def _resolve(value: Any, where: str, env: Mapping[str, str], missing: list[str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, where, env, missing)
    if isinstance(value, dict):
        return {key: _resolve(item, f"{where}.{key}", env, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, f"{where}[{i}]", env, missing) for i, item in enumerate(value)]
    return value


def _substitute(text: str, where: str, env: Mapping[str, str], missing: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name = match.group(1), match.group(2)
        if escaped is not None:
            return escaped
        if name not in env:
            missing.append(f"{name} (used in {where})")
            return match.group(0)
        return env[name]

    return _REFERENCE.sub(replace, text) if "$" in text else text
