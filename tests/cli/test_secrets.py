"""Secrets (spec fields marked airbyte_secret) never show in ferry's output, whatever the
connector does with them: LOG messages, stderr, text on stdout, TRACE errors, results."""

from __future__ import annotations

import json

from clikit import Ferry, WriteConfig

SECRET = "s3cr3t-Tok3n"
NESTED_SECRET = "n3sted-Pa55"
LEAKY = json.dumps(
    {"api_key": SECRET, "count": 1, "mode": "leak", "credentials": {"password": NESTED_SECRET}}
)


def assert_masked(output: str) -> None:
    assert SECRET not in output
    assert NESTED_SECRET not in output


def test_a_connector_echoing_the_secret_everywhere(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    result = ferry("-vv", "check", protocol_sh, "--config", write_config(LEAKY))
    assert result.code == 1
    assert_masked(result.out + result.err)
    assert result.out == "FAILED: bad key **********\n"
    err = result.err.splitlines()
    assert "protocol.sh | stdout text with the key **********" in err
    assert "protocol.sh | stderr text with the key **********" in err
    assert "protocol.sh | logging the key **********" in err
    assert "protocol.sh | the key ********** was rejected" in err


def test_json_output_is_masked(ferry: Ferry, protocol_sh: str, write_config: WriteConfig) -> None:
    result = ferry("check", protocol_sh, "--config", write_config(LEAKY), "--json")
    assert_masked(result.out)
    assert json.loads(result.out) == {"status": "FAILED", "message": "bad key **********"}


def test_a_secret_in_an_error_message(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    # The secret breaks a rule of the spec: jsonschema's message quotes the value.
    config = write_config(
        json.dumps({"api_key": "abc", "count": 1, "credentials": {"password": NESTED_SECRET}})
    )
    result = ferry("check", protocol_sh, "--config", config)
    assert result.code == 2
    assert "config.api_key: '**********' is too short" in result.err
    assert "'abc'" not in result.err


def test_secrets_from_environment_references_are_masked_too(
    ferry_process: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    config = write_config('{"api_key": "${FERRY_TEST_KEY}", "count": 1, "mode": "leak"}')
    result = ferry_process(
        "-v", "check", protocol_sh, "--config", config, env={"FERRY_TEST_KEY": SECRET}
    )
    assert result.code == 1
    assert_masked(result.out + result.err)
    assert "protocol.sh | stderr text with the key **********" in result.err
