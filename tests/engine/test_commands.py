"""spec / check / discover against real connectors: the sh test connectors and source-faker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.engine import commands
from ferry.engine.secrets import MASK, masker
from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    ConnectorFailed,
    ProtocolViolation,
)
from ferry.protocol.messages import ConnectorSpecification
from ferry.runtimes.base import ConnectorRef
from ferry.runtimes.local.process import LocalRuntime
from ferry.runtimes.resolve import resolve_reference

GOOD = {"api_key": "key-1234", "count": 3}


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    """The masker is process-wide: secrets of one test must not mask another's output."""
    yield
    masker.clear()


@pytest.fixture
def protocol_sh(connectors_sh: Path) -> ConnectorRef:
    return ConnectorRef("local", str(connectors_sh / "protocol.sh"))


def connector_log(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == f"ferry.connector.{name}"
    ]


def test_spec_is_read_among_log_lines_and_text(
    protocol_sh: ConnectorRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ferry")
    spec = asyncio.run(commands.fetch_spec(protocol_sh))
    assert spec.documentationUrl == "https://example.com/protocol-sh"
    assert spec.connectionSpecification["required"] == ["api_key", "count"]
    log = connector_log(caplog, "protocol.sh")
    assert (logging.INFO, "protocol.sh starting (not JSON)") in log
    assert (logging.INFO, "printing the spec") in log


def test_check_succeeded_on_a_runtime_the_caller_owns(protocol_sh: ConnectorRef) -> None:
    status = asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "ok"}, LocalRuntime()))
    assert (status.status, status.message) == ("SUCCEEDED", None)


def test_check_failed_is_a_result_not_an_error(protocol_sh: ConnectorRef) -> None:
    status = asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "fail"}))
    assert (status.status, status.message) == ("FAILED", "the service refused the api key")


def test_a_result_followed_by_a_crash_still_counts_with_a_warning(
    protocol_sh: ConnectorRef, caplog: pytest.LogCaptureFixture
) -> None:
    status = asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "late_crash"}))
    assert status.status == "SUCCEEDED"
    assert (logging.WARNING, "exited with code 1 after printing its result") in connector_log(
        caplog, "protocol.sh"
    )


def test_config_error_trace_is_connector_failed(protocol_sh: ConnectorRef) -> None:
    with pytest.raises(ConnectorFailed) as caught:
        asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "config_error"}))
    error = caught.value
    assert str(error) == "connector protocol.sh reported a config_error: cannot reach the service"
    assert (error.exit_code, error.failure_type, error.retryable) == (1, "config_error", False)


def test_transient_error_trace_is_a_retryable_failure(protocol_sh: ConnectorRef) -> None:
    with pytest.raises(ConnectorFailed) as caught:
        asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "transient_error"}))
    assert (caught.value.failure_type, caught.value.retryable) == ("transient_error", True)


def test_system_error_trace_is_a_crash_with_stderr(protocol_sh: ConnectorRef) -> None:
    with pytest.raises(ConnectorCrashed) as caught:
        asyncio.run(commands.check(protocol_sh, {**GOOD, "mode": "system_error"}))
    message = str(caught.value)
    assert message.startswith("connector protocol.sh failed: cannot reach the service")
    assert "about to fail" in message
    assert (caught.value.exit_code, caught.value.process_exit_code) == (3, 1)


def test_discover_handles_every_message_type(
    protocol_sh: ConnectorRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ferry")
    updates: list[dict[str, object]] = []
    catalog = asyncio.run(commands.discover(protocol_sh, GOOD, on_config=updates.append))
    assert [(s.namespace, s.name) for s in catalog.streams] == [(None, "users"), ("app", "events")]
    assert updates == [{"api_key": "rotated"}]
    users = catalog.streams[0]
    assert (users.default_cursor_field, users.source_defined_primary_key) == (
        ["updated_at"],
        [["id"]],
    )
    log = connector_log(caplog, "protocol.sh")
    messages = [text for _, text in log]
    assert (logging.WARNING, "a warning from discover") in log
    assert "discovering (not JSON)" in messages
    assert "{not json either" in messages
    assert any(text.startswith("trace ") and "ESTIMATE" in text for text in messages)
    assert any("STREAM_STATUS" in text and "COMPLETE" in text for text in messages)
    assert any("ANALYTICS" in text for text in messages)
    assert (logging.WARNING, "printed a CATALOG message without its content") in log
    assert {"ignored a RECORD message", "ignored a STATE message"} <= set(messages)
    assert "rotated" not in " ".join(messages), "a CONTROL config is never logged"


def test_a_catalog_line_of_several_megabytes(connectors_sh: Path) -> None:
    ref = ConnectorRef("local", str(connectors_sh / "big_catalog.sh"))
    catalog = asyncio.run(commands.discover(ref, {}))
    assert len(catalog.streams[0].json_schema["description"]) == 1 << 22


def test_a_crash_without_output_shows_the_last_stderr_lines(connectors_sh: Path) -> None:
    ref = ConnectorRef("local", str(connectors_sh / "crash.sh"))
    with pytest.raises(ConnectorCrashed) as caught:
        asyncio.run(commands.fetch_spec(ref))
    message = str(caught.value)
    assert message.startswith(
        "connector crash.sh exited with code 3 without printing a SPEC message"
    )
    assert "RuntimeError: the connector broke on purpose" in message
    assert caught.value.exit_code == 3


def test_no_spec_message_is_a_clear_error(connectors_sh: Path) -> None:
    ref = ConnectorRef("local", str(connectors_sh / "silent.sh"))
    with pytest.raises(ProtocolViolation) as caught:
        asyncio.run(commands.fetch_spec(ref))
    assert "connector silent.sh exited successfully but printed no SPEC message" in str(
        caught.value
    )
    assert "a note on stderr" in str(caught.value)
    assert caught.value.exit_code == 3


# --- config validation against the spec --------------------------------------------------------


def spec_of(schema: dict[str, Any]) -> ConnectorSpecification:
    return ConnectorSpecification(connectionSpecification=schema)


def validation_error(protocol_sh: ConnectorRef, config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        asyncio.run(commands.check(protocol_sh, config))
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_check_validates_the_config_before_running(protocol_sh: ConnectorRef) -> None:
    message = validation_error(
        protocol_sh, {"api_key": "key-1234", "count": -1, "tags": ["ok", "too long"]}
    )
    assert message == (
        "config does not match the connector's spec:\n"
        "  config.count: -1 is less than the minimum of 1\n"
        "  config.tags[1]: 'too long' is too long"
    )


def test_every_violation_is_listed(protocol_sh: ConnectorRef) -> None:
    message = validation_error(protocol_sh, {"count": "three", "colour": "red"})
    assert "config: 'api_key' is a required property" in message
    assert "config.count: 'three' is not of type 'integer'" in message
    assert "config: Additional properties are not allowed ('colour' was unexpected)" in message


def test_a_oneof_violation_names_the_nested_field(protocol_sh: ConnectorRef) -> None:
    message = validation_error(protocol_sh, {**GOOD, "credentials": {"password": 7}})
    assert "config.credentials.password: 7 is not of type 'string'" in message


def test_discover_validates_too(protocol_sh: ConnectorRef) -> None:
    with pytest.raises(ConfigError, match=r"config\.count: 0 is less than the minimum of 1"):
        asyncio.run(commands.discover(protocol_sh, {"api_key": "key-1234", "count": 0}))


def test_a_secret_in_a_validation_error_is_registered_for_masking(
    protocol_sh: ConnectorRef,
) -> None:
    message = validation_error(protocol_sh, {"api_key": "xyz", "count": 1})
    assert "'xyz' is too short" in message  # raw here; the CLI prints it through the masker
    assert masker.mask(message).count(MASK) == 1


def test_validate_config_uses_the_spec_schema_draft() -> None:
    draft_2020 = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "integer"}]}},
    }
    with pytest.raises(
        ConfigError, match=r"source\.config\.pair\[0\]: 'a' is not of type 'integer'"
    ):
        commands.validate_config(spec_of(draft_2020), {"pair": ["a"]}, "source.config")


def test_an_invalid_spec_schema_is_a_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    commands.validate_config(spec_of({"type": "no-such-type"}), {"a": 1})
    assert any("not a valid JSON Schema" in r.getMessage() for r in caplog.records)


# --- source-faker from PyPI ---------------------------------------------------------------------


@pytest.mark.slow
def test_source_faker_spec_check_discover(source_faker: str) -> None:
    ref = resolve_reference(source_faker)

    async def run() -> tuple[ConnectorSpecification, str, list[str]]:
        runtime = LocalRuntime()
        spec = await commands.fetch_spec(ref, runtime)
        config = {"count": 10, "seed": 1}
        status = await commands.check(ref, config, runtime, spec=spec)
        catalog = await commands.discover(ref, config, runtime, spec=spec)
        return spec, status.status, [stream.name for stream in catalog.streams]

    spec, status, streams = asyncio.run(run())
    assert "count" in spec.connectionSpecification["properties"]
    assert status == "SUCCEEDED"
    assert sorted(streams) == ["products", "purchases", "users"]
    with pytest.raises(ConfigError, match=r"config\.count: -1 is less than the minimum of 1"):
        commands.validate_config(spec, {"count": -1})
