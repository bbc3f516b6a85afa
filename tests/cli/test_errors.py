"""The errors users hit, as the CLI shows them: message on stderr and the documented exit code."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clikit import Ferry, WriteConfig

from ferry.cli.main import _run

GOOD = '{"api_key": "key-1234", "count": 2}'


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("ferry: error: ")]
    assert lines, err
    return lines[0].removeprefix("ferry: error: ")


def test_connector_not_found(ferry: Ferry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = ferry("spec", "source-nowhere")
    assert result.code == 2
    assert "connector 'source-nowhere' not found" in error_line(result.err)
    assert "ferry connectors install source-nowhere" in result.err


def test_connector_not_executable(ferry: Ferry, tmp_path: Path) -> None:
    script = tmp_path / "source.sh"
    script.write_text("#!/bin/sh\n")
    result = ferry("spec", str(script))
    assert result.code == 2
    assert error_line(result.err) == f"connector {script} is not executable (try chmod +x)"


def test_connector_crash_without_output_shows_its_stderr(ferry: Ferry, connectors_sh: Path) -> None:
    result = ferry("spec", str(connectors_sh / "crash.sh"))
    assert result.code == 3
    assert error_line(result.err) == (
        "connector crash.sh exited with code 3 without printing a SPEC message:"
        " RuntimeError: the connector broke on purpose"
    )
    assert 'File "connector.py", line 1' in result.err  # the tail follows


def test_non_json_output_is_the_connectors_log_and_the_command_succeeds(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    result = ferry("discover", protocol_sh, "--config", write_config(GOOD), "-v")
    assert result.code == 0
    assert "protocol.sh | discovering (not JSON)" in result.err
    assert "protocol.sh | {not json either" in result.err


def test_config_file_missing(ferry: Ferry, protocol_sh: str, tmp_path: Path) -> None:
    result = ferry("check", protocol_sh, "--config", str(tmp_path / "missing.json"))
    assert result.code == 2
    assert error_line(result.err) == f"config file {tmp_path / 'missing.json'} does not exist"


@pytest.mark.parametrize(
    ("text", "problem"),
    [('{"count": 1,}', "is not valid JSON"), ("count: [1\n", "is not valid JSON or YAML")],
)
def test_config_file_not_json_or_yaml(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig, text: str, problem: str
) -> None:
    result = ferry("check", protocol_sh, "--config", write_config(text))
    assert result.code == 2
    assert problem in error_line(result.err)
    assert "(line " in error_line(result.err)


def test_no_spec_message(ferry: Ferry, connectors_sh: Path) -> None:
    result = ferry("spec", str(connectors_sh / "silent.sh"))
    assert result.code == 3
    assert "printed no SPEC message" in error_line(result.err)


def test_config_violating_the_spec_names_field_and_rule(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    result = ferry(
        "check", protocol_sh, "--config", write_config('{"api_key": "key-1234", "count": -1}')
    )
    assert result.code == 2
    assert error_line(result.err) == "config does not match the connector's spec:"
    assert "  config.count: -1 is less than the minimum of 1" in result.err.splitlines()


def test_unset_environment_variable(
    ferry: Ferry,
    protocol_sh: str,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FERRY_TEST_API_KEY", raising=False)
    config = write_config('{"api_key": "${FERRY_TEST_API_KEY}", "count": 1}')
    result = ferry("check", protocol_sh, "--config", config)
    assert result.code == 2
    assert "environment variable not set: FERRY_TEST_API_KEY (used in config.api_key)" in result.err
    monkeypatch.setenv("FERRY_TEST_API_KEY", "from-the-env")
    assert ferry("check", protocol_sh, "--config", config).code == 0


def test_a_config_error_trace_exits_1(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    config = write_config('{"api_key": "key-1234", "count": 1, "mode": "config_error"}')
    result = ferry("check", protocol_sh, "--config", config)
    assert result.code == 1
    assert (
        error_line(result.err)
        == "connector protocol.sh reported a config_error: cannot reach the service"
    )


def failing_handler(args: argparse.Namespace) -> int:
    raise RuntimeError("something nobody planned for")


def test_an_unexpected_exception_exits_3_with_a_short_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(handler=failing_handler)
    assert _run(args, debug=False) == 3
    err = capsys.readouterr().err
    assert err == (
        "ferry: error: unexpected RuntimeError: something nobody planned for "
        "(run with --debug for the traceback)\n"
    )
    assert _run(args, debug=True) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("ferry: error: unexpected RuntimeError: something nobody planned for\n")


def test_debug_shows_the_traceback_of_a_ferry_error(ferry: Ferry, connectors_sh: Path) -> None:
    result = ferry("--debug", "spec", str(connectors_sh / "silent.sh"))
    assert result.code == 3
    assert "Traceback (most recent call last):" in result.err
    assert "ProtocolViolation" in result.err


def test_errors_from_a_real_process(ferry_process: Ferry, connectors_sh: Path) -> None:
    result = ferry_process("spec", str(connectors_sh / "crash.sh"))
    assert result.code == 3
    assert "ferry: error: connector crash.sh exited with code 3" in result.err
    assert "Traceback" in result.err  # the connector's, shown as its last stderr lines
    assert "ferry/cli" not in result.err  # but not ferry's own traceback


def test_output_closed_by_its_reader_ends_ferry_quietly(tmp_path: Path) -> None:
    """`ferry runs C --json | head -0`: the reader is gone before ferry writes."""
    connection = tmp_path / "c.yaml"
    connection.write_text("name: c\nsource: {connector: a}\ndestination: {connector: b}\n")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ferry", "runs", str(connection), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")
