"""Connector config files (JSON or YAML) and `${NAME}` environment references in their values.

In any string value of a config, `${NAME}` is replaced by the environment variable NAME (NAME is
letters, digits and `_`, not starting with a digit); an unset variable is an error. Write
`$${NAME}` for a literal `${NAME}`. Any other `$` is left as it is. Keys are never expanded.

`rewrite_config_file` writes back the config a connector updated (a CONTROL message), atomically
and keeping the previous content next to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
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


def rewrite_config_file(path: str | Path, config: Mapping[str, Any]) -> Path:
    """Replace the config in `path` by `config`; returns the backup of the previous content.

    The previous content goes to `PATH.bak`, then the new one replaces the file in one rename, so
    a crash leaves either the old or the new config, never half of one. JSON stays JSON (2-space
    indent); YAML is written as YAML (its comments are lost). A value still equal to what one of
    the file's `${NAME}` references gives keeps the reference; a new value containing `${NAME}`
    is escaped so that it stays literal.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = parse_config(text, str(path))
    kept = _keep_references(raw, resolve_env(raw), config)
    if text.lstrip().startswith(("{", "[")):
        new_text = json.dumps(kept, indent=2, ensure_ascii=False) + "\n"
    else:
        new_text = yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)
    mode = path.stat().st_mode & 0o7777
    backup = path.with_name(path.name + ".bak")
    _replace_atomically(backup, text, mode)
    _replace_atomically(path, new_text, mode)
    return backup


def _keep_references(raw: Any, resolved: Any, new: Any) -> Any:
    if new == resolved:
        return raw
    if isinstance(new, dict) and isinstance(raw, dict) and isinstance(resolved, dict):
        return {
            key: _keep_references(raw[key], resolved[key], value) if key in raw else _escaped(value)
            for key, value in new.items()
        }
    return _escaped(new)


def _escaped(value: Any) -> Any:
    """`value` with every `${NAME}` written `$${NAME}`, so reading it back gives it unchanged."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: "$" + match.group(0), value)
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def _replace_atomically(path: Path, text: str, mode: int) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
