"""The one-shot connector commands: spec, check, discover — on any runtime.

Each runs the connector once, reads its stdout in large chunks and decodes every line: the
expected message (SPEC, CONNECTION_STATUS, CATALOG) is the result; LOG and TRACE go to the log
of `ferry.connector.<name>`; lines that are not JSON are the connector's log output. A TRACE
error is remembered: it explains a missing result better than an exit code does. A CONTROL
message with an updated config goes to the caller's `on_config` as soon as it is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from jsonschema.exceptions import ValidationError

from ferry.engine import spec_cache
from ferry.engine.connector_config import updated_config
from ferry.engine.connector_log import ConnectorLog
from ferry.engine.pump import complete_lines
from ferry.engine.secrets import register_secrets
from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    ConnectorFailed,
    DecodeError,
    FerryError,
    InternalError,
    ProtocolViolation,
)
from ferry.protocol import convert
from ferry.protocol.messages import (
    CATALOG,
    CONNECTION_STATUS,
    CONTROL,
    DESTINATION_CATALOG,
    SPEC,
    STATE,
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteErrorTraceMessage,
    AirbyteMessage,
    ConnectorSpecification,
    DestinationCatalog,
)
from ferry.runtimes import get_runtime
from ferry.runtimes.base import (
    ByteReader,
    ConnectorInvocation,
    ConnectorRef,
    RunLabels,
    Runtime,
    Verb,
)

logger = logging.getLogger("ferry.commands")
T = TypeVar("T")

CHUNK_SIZE = 1 << 20
TERMINATE_GRACE = 5.0
_MAX_RULE_LENGTH = 300
# Where each result message keeps its content.
_PAYLOAD = {
    SPEC: "spec",
    CONNECTION_STATUS: "connectionStatus",
    CATALOG: "catalog",
    DESTINATION_CATALOG: "destination_catalog",
}
# Failure types the connector reports about its input or a passing condition; anything else
# (system_error, none given) means it broke.
_REPORTED_FAILURES = ("config_error", "transient_error")

# Receives the config a connector sent in a CONTROL message; called before the next line is read.
ConfigSink = Callable[[dict[str, Any]], None]


async def fetch_spec(
    ref: ConnectorRef, runtime: Runtime | None = None, *, refresh_cache: bool = False
) -> ConnectorSpecification:
    """Run the connector's `spec`; with `refresh_cache`, also cache the result for `cached_spec`."""
    async with _runtime_for(ref, runtime) as running:
        # Taken before the run: code replaced meanwhile must not get the old code's spec.
        fingerprint = await running.fingerprint(ref) if refresh_cache else None
        message = await run_command(ref, "spec", {}, running, SPEC)
    spec = _content(message.spec, SPEC)
    if fingerprint is not None:
        spec_cache.store_spec(fingerprint, spec)
    return spec


async def cached_spec(
    ref: ConnectorRef, runtime: Runtime, fingerprint: str | None = None
) -> ConnectorSpecification:
    """The spec cached for exactly this connector code, else `fetch_spec`'s (then cached).
    `fingerprint`: the runtime's, when the caller already has it."""
    fingerprint = fingerprint or await runtime.fingerprint(ref)
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
    on_config: ConfigSink | None = None,
) -> AirbyteConnectionStatus:
    """The connector's verdict on `config` (SUCCEEDED or FAILED); the config is validated first."""
    message = await _with_config(ref, "check", CONNECTION_STATUS, config, runtime, spec, on_config)
    return _content(message.connectionStatus, CONNECTION_STATUS)


async def discover(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime | None = None,
    *,
    spec: ConnectorSpecification | None = None,
    on_config: ConfigSink | None = None,
) -> AirbyteCatalog:
    """A source's catalog."""
    catalog = await discover_any(ref, config, runtime, spec=spec, on_config=on_config)
    if not isinstance(catalog, AirbyteCatalog):
        raise ProtocolViolation(
            f"connector {connector_name(ref)} answered discover with a DESTINATION_CATALOG: "
            "it is a destination, not a source"
        )
    return catalog


async def discover_any(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime | None = None,
    *,
    spec: ConnectorSpecification | None = None,
    on_config: ConfigSink | None = None,
) -> AirbyteCatalog | DestinationCatalog:
    """A source's CATALOG or a destination's DESTINATION_CATALOG, whichever it answers."""
    message = await _with_config(
        ref, "discover", (CATALOG, DESTINATION_CATALOG), config, runtime, spec, on_config
    )
    return catalog_of(message, ref)


def catalog_of(message: AirbyteMessage, ref: ConnectorRef) -> AirbyteCatalog | DestinationCatalog:
    """The typed catalog a CATALOG or DESTINATION_CATALOG message holds."""
    if message.catalog is not None:
        return message.catalog
    return destination_catalog_of(message, connector_name(ref))


async def _with_config(
    ref: ConnectorRef,
    verb: Verb,
    expected: str | tuple[str, ...],
    config: Mapping[str, Any],
    runtime: Runtime | None,
    spec: ConnectorSpecification | None,
    on_config: ConfigSink | None,
) -> AirbyteMessage:
    """Run `check` or `discover` with `config` (validated against the spec first) and return
    its `expected` result message."""
    async with _runtime_for(ref, runtime) as running:
        spec = await _checked_spec(ref, config, running, spec)
        return await run_command(
            ref,
            verb,
            _config_files(config),
            running,
            expected,
            on_config=_masking(spec, on_config),
        )


def destination_catalog_of(message: AirbyteMessage, name: str) -> DestinationCatalog:
    """The typed payload of a DESTINATION_CATALOG message; ProtocolViolation if malformed."""
    try:
        return convert(message.destination_catalog, DestinationCatalog)
    except DecodeError as error:
        raise ProtocolViolation(
            f"connector {name} printed a malformed DESTINATION_CATALOG: {error}"
        ) from None


def _content(content: T | None, what: str) -> T:
    """The content of a result message (`run_command` returns only messages that have it)."""
    if content is None:
        raise InternalError(f"a {what} message without its content was taken as the result")
    return content


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


async def _checked_spec(
    ref: ConnectorRef,
    config: Mapping[str, Any],
    runtime: Runtime,
    spec: ConnectorSpecification | None,
) -> ConnectorSpecification:
    """The connector's spec, once `config` is valid under it (and its secrets masked)."""
    spec = spec or await cached_spec(ref, runtime)
    register_secrets(spec, config)
    validate_config(spec, config)
    return spec


def _config_files(config: Mapping[str, Any]) -> dict[str, bytes]:
    return {"config": json.dumps(config).encode()}


def _masking(spec: ConnectorSpecification, on_config: ConfigSink | None) -> ConfigSink | None:
    """`on_config`, after masking the secrets of the config it receives."""
    if on_config is None:
        return None

    def receive(config: dict[str, Any]) -> None:
        register_secrets(spec, config)
        on_config(config)

    return receive


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
    expected: str | tuple[str, ...],
    *,
    on_config: ConfigSink | None = None,
    labels: RunLabels | None = None,
) -> AirbyteMessage:
    """Run one command and return its first `expected` message (of any of the `expected`
    types), or raise why there is none."""
    output = CommandOutput(connector_name(ref), expected, on_config)
    invocation = ConnectorInvocation(ref, verb, files, labels or RunLabels())
    process = await runtime.start(invocation, output.stderr_line)
    try:
        await output.consume(process.stdout)
        exit_code = await process.wait()
    finally:
        await process.terminate(TERMINATE_GRACE)
    return output.result_or_error(exit_code, process.stderr_tail())


async def write_input(
    ref: ConnectorRef,
    files: Mapping[str, bytes],
    runtime: Runtime,
    stdin: bytes,
    labels: RunLabels | None = None,
) -> None:
    """Run a destination's `write` with `stdin` as its whole input (a clear: no record, one
    COMPLETE per stream); raise why when it exits non-zero or reports an error."""
    output = CommandOutput(connector_name(ref), STATE)
    invocation = ConnectorInvocation(ref, "write", files, labels or RunLabels())
    process = await runtime.start(invocation, output.stderr_line)
    try:
        if process.stdin is None:
            raise InternalError(f"{invocation.verb} was started without a stdin")
        await process.stdin.write(stdin)
        await process.stdin.close()
        await output.consume(process.stdout)
        exit_code = await process.wait()
    finally:
        await process.terminate(TERMINATE_GRACE)
    if exit_code != 0 or output.error is not None:
        raise output.failure(exit_code, process.stderr_tail())


class CommandOutput:
    """Sorts a connector's output: the expected message, its error trace, everything to the log."""

    def __init__(
        self, name: str, expected: str | tuple[str, ...], on_config: ConfigSink | None = None
    ) -> None:
        self.name = name
        self.expected = (expected,) if isinstance(expected, str) else expected
        self.on_config = on_config
        self.connector_log = ConnectorLog(name)
        self.log = self.connector_log.log
        self.result: AirbyteMessage | None = None
        self.error: AirbyteErrorTraceMessage | None = None

    def stderr_line(self, line: str) -> None:
        self.connector_log.text(line)

    async def consume(self, stdout: ByteReader) -> None:
        async for block in complete_lines(stdout, CHUNK_SIZE):
            for line in block.split(b"\n"):
                message = self.connector_log.line(line)
                if message is not None:
                    self.message(message)

    def message(self, message: AirbyteMessage) -> None:
        if message.type in self.expected:
            if getattr(message, _PAYLOAD[message.type]) is None:
                self.log.warning("printed a %s message without its content", message.type)
            elif self.result is None:
                self.result = message
        elif message.type == CONTROL:
            self._control(message)
        else:
            # INFO for a TRACE error: it reaches the user anyway, as the command's error.
            error = self.connector_log.message(message)
            if self.error is None:
                self.error = error

    def _control(self, message: AirbyteMessage) -> None:
        config = updated_config(message)
        if config is None:
            self.log.debug("ignored a CONTROL message without a connector config")
        elif self.on_config is None:
            self.log.warning("sent an updated config, but this command has none to update")
        else:
            self.on_config(config)

    def result_or_error(self, exit_code: int, stderr_tail: list[str]) -> AirbyteMessage:
        if self.result is not None:
            if exit_code != 0:
                self.log.warning("exited with code %d after printing its result", exit_code)
            return self.result
        raise self.failure(exit_code, stderr_tail)

    def raise_for_failure(self, exit_code: int, stderr_tail: list[str]) -> None:
        """For a command whose output is a stream (read): fail on a TRACE error or a bad exit."""
        if self.error is not None or exit_code != 0:
            raise self.failure(exit_code, stderr_tail)

    def failure(self, exit_code: int, stderr_tail: list[str]) -> FerryError:
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
                f"{' or '.join(self.expected)} message",
                exit_code=exit_code,
                stderr_tail=tail,
            )
        shown = f"\n--- last stderr lines ---\n{tail}" if tail else ""
        return ProtocolViolation(
            f"connector {self.name} exited successfully but printed no {' or '.join(self.expected)} message"
            f" (is it an Airbyte connector?){shown}"
        )
