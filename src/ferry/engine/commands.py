"""The one-shot connector commands: spec, check, discover — on any runtime.

Each runs the connector once, reads its stdout in large chunks and decodes every line: the
expected message (SPEC, CONNECTION_STATUS, CATALOG) is the result; LOG and TRACE go to the log
of `ferry.connector.<name>`; lines that are not JSON are the connector's log output. A TRACE
error is remembered: it explains a missing result better than an exit code does.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from ferry.engine import spec_cache
from ferry.engine.secrets import register_secrets
from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    ConnectorFailed,
    DecodeError,
    FerryError,
    ProtocolViolation,
)
from ferry.protocol import decode_message, encode
from ferry.protocol.messages import (
    CATALOG,
    CONNECTION_STATUS,
    CONTROL,
    LOG,
    SPEC,
    TRACE,
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteErrorTraceMessage,
    AirbyteMessage,
    ConnectorSpecification,
)
from ferry.runtimes import get_runtime
from ferry.runtimes.base import ByteReader, ConnectorInvocation, ConnectorRef, Runtime, Verb

logger = logging.getLogger("ferry.commands")

CHUNK_SIZE = 1 << 20
TERMINATE_GRACE = 5.0
_MAX_RULE_LENGTH = 300
_LOG_LEVELS = {
    "FATAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": logging.DEBUG,
}
# Where each result message keeps its content.
_PAYLOAD = {SPEC: "spec", CONNECTION_STATUS: "connectionStatus", CATALOG: "catalog"}
# Failure types the connector reports about its input or a passing condition; anything else
# (system_error, none given) means it broke.
_REPORTED_FAILURES = ("config_error", "transient_error")


async def fetch_spec(
    ref: ConnectorRef, runtime: Runtime | None = None, *, refresh_cache: bool = False
) -> ConnectorSpecification:
    """Run the connector's `spec`; with `refresh_cache`, also cache the result for `cached_spec`."""
    async with _runtime_for(ref, runtime) as running:
        # Taken before the run: code replaced meanwhile must not get the old code's spec.
        fingerprint = await running.fingerprint(ref) if refresh_cache else None
        message = await run_command(ref, "spec", {}, running, SPEC)
    assert message.spec is not None
    if fingerprint is not None:
        spec_cache.store_spec(fingerprint, message.spec)
    return message.spec


async def cached_spec(ref: ConnectorRef, runtime: Runtime) -> ConnectorSpecification:
    """The spec cached for exactly this connector code, else `fetch_spec`'s (then cached)."""
    fingerprint = await runtime.fingerprint(ref)
    if fingerprint is None:
        logger.debug("%s: the runtime cannot fingerprint it; running spec", ref.display)
        return await fetch_spec(ref, runtime)
    spec = spec_cache.load_spec(fingerprint)
    if spec is not None:
        logger.debug("%s: spec from the cache", ref.display)
        return spec
    logger.debug("%s: no cached spec; running spec", ref.display)
    spec = await fetch_spec(ref, runtime)
    spec_cache.store_spec(fingerprint, spec)
    return spec


async def check(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime | None = None,
    *,
    spec: ConnectorSpecification | None = None,
) -> AirbyteConnectionStatus:
    """The connector's verdict on `config` (SUCCEEDED or FAILED); the config is validated first."""
    async with _runtime_for(ref, runtime) as running:
        files = await _checked_config_files(ref, config, running, spec)
        message = await run_command(ref, "check", files, running, CONNECTION_STATUS)
    assert message.connectionStatus is not None
    return message.connectionStatus


async def discover(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime | None = None,
    *,
    spec: ConnectorSpecification | None = None,
) -> AirbyteCatalog:
    async with _runtime_for(ref, runtime) as running:
        files = await _checked_config_files(ref, config, running, spec)
        message = await run_command(ref, "discover", files, running, CATALOG)
    assert message.catalog is not None
    return message.catalog


@contextlib.asynccontextmanager
async def _runtime_for(ref: ConnectorRef, runtime: Runtime | None) -> AsyncIterator[Runtime]:
    """The caller's runtime, or a fresh one for `ref` that is closed afterwards."""
    if runtime is not None:
        yield runtime
        return
    own = get_runtime(ref.runtime)
    try:
        yield own
    finally:
        await own.close()


async def _checked_config_files(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime,
    spec: ConnectorSpecification | None,
) -> dict[str, bytes]:
    spec = spec or await cached_spec(ref, runtime)
    register_secrets(spec, config)
    validate_config(spec, config)
    return {"config": json.dumps(config).encode()}


def validate_config(
    spec: ConnectorSpecification, config: Mapping[str, Any], where: str = "config"
) -> None:
    """ConfigError listing every way `config` breaks the spec's JSON Schema, by field path."""
    schema = spec.connectionSpecification
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        logger.warning(
            "the connector's spec is not a valid JSON Schema (%s); config not validated",
            error.message,
        )
        return
    errors = sorted(
        validator_class(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        problems = "\n".join(f"  {line}" for error in errors for line in _explain(error, where))
        raise ConfigError(f"{where} does not match the connector's spec:\n{problems}")


def _explain(error: ValidationError, where: str) -> list[str]:
    """`path: rule` lines; for oneOf/anyOf, the errors of the branch the config came closest to
    (the one whose errors lie deepest: the user clearly chose it), not "valid under none"."""
    if not error.context:
        return [f"{_path(error, where)}: {_shorten(error.message)}"]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    closest = max(
        branches.values(),
        key=lambda subs: (max(len(sub.absolute_path) for sub in subs), -len(subs)),
    )
    return [line for sub in closest for line in _explain(sub, where)]


def _path(error: ValidationError, where: str) -> str:
    return where + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )


def _shorten(rule: str) -> str:
    return rule if len(rule) <= _MAX_RULE_LENGTH else rule[:_MAX_RULE_LENGTH] + "…"


def connector_name(ref: ConnectorRef) -> str:
    """A short name for logs: the executable's name, or the image's name without its tag."""
    if ref.runtime == "local":
        return Path(ref.target).name
    image = ref.target.split("@", 1)[0].rsplit("/", 1)[-1]
    return image.split(":", 1)[0]


async def run_command(
    ref: ConnectorRef,
    verb: Verb,
    files: Mapping[str, bytes],
    runtime: Runtime,
    expected: str,
) -> AirbyteMessage:
    """Run one command and return its first `expected` message, or raise why there is none."""
    output = CommandOutput(connector_name(ref), expected)
    process = await runtime.start(ConnectorInvocation(ref, verb, files), output.stderr_line)
    try:
        await output.consume(process.stdout)
        exit_code = await process.wait()
    finally:
        await process.terminate(TERMINATE_GRACE)
    return output.result_or_error(exit_code, process.stderr_tail())


class CommandOutput:
    """Sorts a connector's output: the expected message, its error trace, everything to the log."""

    def __init__(self, name: str, expected: str) -> None:
        self.name = name
        self.expected = expected
        self.log = logging.getLogger(f"ferry.connector.{name}")
        self.result: AirbyteMessage | None = None
        self.error: AirbyteErrorTraceMessage | None = None

    def stderr_line(self, line: str) -> None:
        self.log.info("%s", line)

    async def consume(self, stdout: ByteReader) -> None:
        pending: list[bytes] = []  # the start of a line that spans chunks (a big catalog)
        while chunk := await stdout.read(CHUNK_SIZE):
            end = chunk.rfind(b"\n")
            if end < 0:
                pending.append(chunk)
                continue
            pending.append(chunk[:end])
            for line in b"".join(pending).split(b"\n"):
                self.line(line)
            pending = [chunk[end + 1 :]]
        self.line(b"".join(pending))

    def line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            message = decode_message(line) if line.startswith(b"{") else None
        except DecodeError:
            message = None
        if message is None:
            self.log.info("%s", line.decode("utf-8", "replace"))
        else:
            self.message(message)

    def message(self, message: AirbyteMessage) -> None:
        if message.type == self.expected:
            if getattr(message, _PAYLOAD[self.expected]) is None:
                self.log.warning("printed a %s message without its content", message.type)
            elif self.result is None:
                self.result = message
        elif message.type == LOG and message.log is not None:
            level = _LOG_LEVELS.get(message.log.level.upper(), logging.INFO)
            self.log.log(level, "%s", message.log.message)
            if message.log.stack_trace:
                self.log.debug("%s", message.log.stack_trace)
        elif message.type == TRACE and message.trace is not None:
            self._trace(message)
        elif message.type == CONTROL:
            self.log.info("asked to update its config; ferry does not persist connector configs")
        else:
            self.log.debug("ignored a %s message", message.type)

    def _trace(self, message: AirbyteMessage) -> None:
        assert message.trace is not None
        error = message.trace.error
        if error is None:
            self.log.debug("trace %s", encode(message.trace).decode())
            return
        # INFO: the error reaches the user anyway, as the command's error or its result.
        self.log.info("%s", error.message)
        if error.internal_message:
            self.log.debug("%s", error.internal_message)
        if error.stack_trace:
            self.log.debug("%s", error.stack_trace)
        if self.error is None:
            self.error = error

    def result_or_error(self, exit_code: int, stderr_tail: list[str]) -> AirbyteMessage:
        if self.result is not None:
            if exit_code != 0:
                self.log.warning("exited with code %d after printing its result", exit_code)
            return self.result
        raise self._failure(exit_code, stderr_tail)

    def raise_for_failure(self, exit_code: int, stderr_tail: list[str]) -> None:
        """For a command whose output is a stream (read): fail on a TRACE error or a bad exit."""
        if self.error is not None or exit_code != 0:
            raise self._failure(exit_code, stderr_tail)

    def _failure(self, exit_code: int, stderr_tail: list[str]) -> FerryError:
        tail = "\n".join(stderr_tail)
        error = self.error
        if error is not None and error.failure_type in _REPORTED_FAILURES:
            return ConnectorFailed(
                f"connector {self.name} reported a {error.failure_type}: {error.message}",
                failure_type=error.failure_type,
            )
        if error is not None:
            return ConnectorCrashed(
                f"connector {self.name} failed: {error.message}",
                exit_code=exit_code,
                stderr_tail=tail,
            )
        if exit_code != 0:
            return ConnectorCrashed(
                f"connector {self.name} exited with code {exit_code} without printing a "
                f"{self.expected} message",
                exit_code=exit_code,
                stderr_tail=tail,
            )
        shown = f"\n--- last stderr lines ---\n{tail}" if tail else ""
        return ProtocolViolation(
            f"connector {self.name} exited successfully but printed no {self.expected} message"
            f" (is it an Airbyte connector?){shown}"
        )
