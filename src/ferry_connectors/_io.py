"""What every first-party connector shares: the command line, loading its files, writing messages.

A connector is a program speaking the Airbyte Protocol: `spec`, `check --config F`,
`discover --config F`, `read --config F --catalog F [--state F]`, `write --config F --catalog F`.
Every message is one JSON line on stdout. Invalid arguments or configuration end with a TRACE
ERROR message (failure_type `config_error`) and exit code 1; `check` instead reports a
CONNECTION_STATUS FAILED and exits 0, as the protocol asks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import jsonschema

from ferry.errors import ConfigError, FerryError
from ferry.protocol import convert, encode
from ferry.protocol.messages import (
    APPEND,
    APPEND_DEDUP,
    CONNECTION_STATUS,
    LOG,
    OVERWRITE,
    SPEC,
    TRACE,
    AirbyteConnectionStatus,
    AirbyteErrorTraceMessage,
    AirbyteLogMessage,
    AirbyteMessage,
    AirbyteTraceMessage,
    ConfiguredAirbyteCatalog,
    ConnectorSpecification,
)

EXIT_FAILED = 1

CONFIG_ERROR = "config_error"
SYSTEM_ERROR = "system_error"

JsonObject = dict[str, Any]


class ConnectorError(Exception):
    """A failure the connector reports with a TRACE ERROR (not a configuration problem)."""

    def __init__(self, message: str, *, failure_type: str = SYSTEM_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.failure_type = failure_type


@dataclass(frozen=True)
class Args:
    command: str
    config: Path | None = None
    catalog: Path | None = None
    state: Path | None = None


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def parse_args(prog: str, argv: Sequence[str], commands: Sequence[str]) -> Args:
    """Parse `COMMAND [--config F] [--catalog F] [--state F]`; ConfigError on bad usage."""
    parser = _Parser(prog=prog, add_help=False)
    sub = parser.add_subparsers(dest="command", metavar="|".join(commands))
    for name in commands:
        command = sub.add_parser(name, prog=f"{prog} {name}", add_help=False)
        if name == "spec":
            continue
        command.add_argument("--config", type=Path, required=True)
        if name in ("read", "write"):
            command.add_argument("--catalog", type=Path, required=True)
        if name == "read":
            command.add_argument("--state", type=Path)
    namespace = parser.parse_args(list(argv))
    if namespace.command is None:
        raise ConfigError(f"{prog}: a command is required, one of {', '.join(commands)}")
    return Args(
        command=namespace.command,
        config=getattr(namespace, "config", None),
        catalog=getattr(namespace, "catalog", None),
        state=getattr(namespace, "state", None),
    )


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def write_line(line: bytes) -> None:
    """Write one complete message line (with its newline) and flush it."""
    out = sys.stdout.buffer
    out.write(line)
    out.flush()


def emit(message: AirbyteMessage) -> None:
    write_line(encode(message) + b"\n")


def log(message: str, level: str = "INFO") -> None:
    write_line(log_line(message, level))


def log_line(message: str, level: str = "INFO") -> bytes:
    """A LOG message line, with its newline."""
    return (
        encode(AirbyteMessage(type=LOG, log=AirbyteLogMessage(level=level, message=message)))
        + b"\n"
    )


def trace_error(message: str, failure_type: str, stack_trace: str | None = None) -> None:
    error = AirbyteErrorTraceMessage(
        message=message,
        internal_message=message,
        failure_type=failure_type,
        stack_trace=stack_trace,
    )
    trace = AirbyteTraceMessage(type="ERROR", emitted_at=time.time() * 1000, error=error)
    emit(AirbyteMessage(type=TRACE, trace=trace))


def emit_spec(connection_specification: JsonObject, **extra: Any) -> None:
    spec = ConnectorSpecification(connectionSpecification=connection_specification, **extra)
    emit(AirbyteMessage(type=SPEC, spec=spec))


def emit_status(succeeded: bool, message: str | None = None) -> None:
    status = AirbyteConnectionStatus(status="SUCCEEDED" if succeeded else "FAILED", message=message)
    emit(AirbyteMessage(type=CONNECTION_STATUS, connectionStatus=status))


def emit_check(
    path: Path | None,
    schema: JsonObject,
    test: Callable[[JsonObject], str | None] | None = None,
) -> int:
    """The `check` command: the config against its schema, then `test` (a problem, or None).

    A bad config is a FAILED status, not an error: the command itself succeeded (exit 0).
    """
    try:
        config = load_config(path, schema)
    except ConfigError as e:
        emit_status(False, e.message)
        return 0
    problem = test(config) if test is not None else None
    emit_status(problem is None, problem)
    return 0


# ------------------------------------------------------------------------------------------------
# Input files
# ------------------------------------------------------------------------------------------------


def load_json(path: Path, what: str) -> Any:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file {str(path)!r}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"the {what} file {str(path)!r} is not valid JSON: {e}") from None


def load_config(path: Path | None, schema: JsonObject) -> JsonObject:
    """Read a config file and validate it against the connector's connectionSpecification."""
    if path is None:
        raise ConfigError("--config is required")
    config = load_json(path, "config")
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(_describe_validation_error(e) for e in errors)
        raise ConfigError(f"invalid config: {problems}")
    if not isinstance(config, dict):
        raise ConfigError("invalid config: expected a JSON object")
    return config


def _describe_validation_error(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def load_catalog(path: Path | None) -> ConfiguredAirbyteCatalog:
    if path is None:
        raise ConfigError("--catalog is required")
    raw = load_json(path, "catalog")
    try:
        return convert(raw, ConfiguredAirbyteCatalog)
    except FerryError as e:
        raise ConfigError(
            f"the catalog file {str(path)!r} is not a configured catalog: {e}"
        ) from None


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def run_destination(
    prog: str,
    spec: JsonObject,
    write: Callable[[Args], int],
    test: Callable[[JsonObject], str | None] | None = None,
) -> int:
    """A destination's spec, check (`test`: see emit_check) and write commands, as `run` runs."""

    def handle(args: Args) -> int:
        if args.command == "spec":
            emit_spec(spec, supported_destination_sync_modes=[OVERWRITE, APPEND, APPEND_DEDUP])
            return 0
        if args.command == "check":
            return emit_check(args.config, spec, test)
        return write(args)

    return run(prog, ("spec", "check", "write"), handle)


def run(prog: str, commands: Sequence[str], handler: Callable[[Args], int]) -> int:
    """Parse the command line, call handler, turn every failure into a TRACE ERROR."""
    try:
        args = parse_args(prog, sys.argv[1:], commands)
        return handler(args)
    except ConfigError as e:
        return _fail(e.message, CONFIG_ERROR)
    except ConnectorError as e:
        return _fail(e.message, e.failure_type)
    except BrokenPipeError:
        # Whoever reads our output went away: nothing useful can be said on stdout.
        _quiet_stdout()
        print(f"{prog}: output closed by the reader", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        return _fail(
            f"{prog} failed: {type(e).__name__}: {e}", SYSTEM_ERROR, traceback.format_exc()
        )


def _fail(message: str, failure_type: str, stack_trace: str | None = None) -> int:
    try:
        trace_error(message, failure_type, stack_trace)
    except BrokenPipeError:
        _quiet_stdout()
    print(message, file=sys.stderr)
    return EXIT_FAILED


def _quiet_stdout() -> None:
    """After EPIPE, make the interpreter's final flush of stdout silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
