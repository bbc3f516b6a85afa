"""Config files, `${NAME}` environment references, and the secrets a config holds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ferry.engine.config import load_config, parse_config, resolve_env
from ferry.engine.secrets import MASK, MaskingFilter, SecretMasker, collect_secrets
from ferry.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_json_and_yaml_files(tmp_path: Path) -> None:
    as_json = write(tmp_path, "c.json", '{"count": 3, "nested": {"a": [1, 2]}}')
    as_yaml = write(tmp_path, "c.yaml", "count: 3\nnested:\n  a: [1, 2]\n")
    assert (
        load_config(as_json, {})
        == load_config(as_yaml, {})
        == {"count": 3, "nested": {"a": [1, 2]}}
    )


def test_yaml_dates_stay_strings_as_in_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.yaml", "start_date: 2024-01-01\n"), {})
    assert config == {"start_date": "2024-01-01"}
    json.dumps(config)


def test_a_missing_file(tmp_path: Path) -> None:
    assert (
        config_error(tmp_path / "nope.json")
        == f"config file {tmp_path / 'nope.json'} does not exist"
    )


def test_a_directory(tmp_path: Path) -> None:
    assert "is a directory" in config_error(tmp_path)


def test_broken_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{\n  "count": 3,\n  "seed": \n}\n')
    message = config_error(path)
    assert message.startswith(f"{path} is not valid JSON: Expecting value (line 4, column 1)")


def test_broken_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "count: 3\nseed: [1, 2\nother: x\n")
    message = config_error(path)
    assert message.startswith(f"{path} is not valid JSON or YAML:")
    assert "(line 3, column" in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1, 2]", "a list"), ("just text", "a str"), ("", "empty"), ("# only a comment\n", "empty")],
)
def test_the_file_must_hold_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, "c.yaml", text)
    assert (
        config_error(path) == f"{path} must hold an object (a mapping of fields), but it is {kind}"
    )


def test_values_json_cannot_hold_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "blob: !!binary aGVsbG8=\n")
    assert "cannot be written as JSON" in config_error(path)


def test_env_references_are_resolved_in_every_string(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        "url: https://${HOST}:${PORT}/x\nlist: [a, '${HOST}']\nnested: {deep: {v: '${PORT}'}}\n"
        "number: 7\nkey_${HOST}: kept\n",
    )
    config = load_config(path, {"HOST": "db.local", "PORT": "5432"})
    assert config == {
        "url": "https://db.local:5432/x",
        "list": ["a", "db.local"],
        "nested": {"deep": {"v": "5432"}},
        "number": 7,
        "key_${HOST}": "kept",  # keys are never expanded
    }


def test_unset_variables_are_named_with_where_they_are_used(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"a": "${ONE}", "b": {"c": ["x", "${TWO}"]}}')
    message = config_error(path, {})
    assert message == (
        f"{path}: environment variable not set: ONE (used in config.a); TWO (used in config.b.c[1])"
        " (set it, or write $${NAME} for a literal ${NAME})"
    )


def test_escapes_and_other_dollars() -> None:
    value = {"a": "$${HOME} is literal", "b": "cost: $5 and $HOME and ${", "c": "$$${X}"}
    assert resolve_env(value, "config", {"X": "1", "HOME": "/root"}) == {
        "a": "${HOME} is literal",
        "b": "cost: $5 and $HOME and ${",
        "c": "$${X}",
    }


def test_resolve_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TEST_TOKEN", "t0k")
    assert resolve_env(["${FERRY_TEST_TOKEN}"], "source.config") == ["t0k"]
    monkeypatch.delenv("FERRY_TEST_TOKEN")
    with pytest.raises(ConfigError, match=r"FERRY_TEST_TOKEN \(used in source\.config\[0\]\)"):
        resolve_env(["${FERRY_TEST_TOKEN}"], "source.config")


def test_parse_config_accepts_json_that_yaml_would_misread() -> None:
    assert parse_config('{"tab":\t"x"}', "inline") == {"tab": "x"}


# --- secrets ------------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "definitions": {"key": {"type": "string", "airbyte_secret": True}},
    "properties": {
        "host": {"type": "string"},
        "password": {"type": "string", "airbyte_secret": True},
        "pin": {"type": "integer", "airbyte_secret": True},
        "ref_key": {"$ref": "#/definitions/key"},
        "credentials": {
            "type": "object",
            "oneOf": [
                {
                    "properties": {
                        "kind": {"const": "oauth"},
                        "client_secret": {"airbyte_secret": True},
                    }
                },
                {"properties": {"kind": {"const": "key"}, "api_key": {"airbyte_secret": True}}},
            ],
        },
        "replicas": {
            "type": "array",
            "items": {"type": "object", "properties": {"token": {"airbyte_secret": True}}},
        },
        "extra": {"type": "object", "additionalProperties": {"airbyte_secret": True}},
        "whole": {"type": "object", "airbyte_secret": True},
        "flag": {"type": "boolean", "airbyte_secret": True},
    },
}


def test_secrets_are_collected_everywhere_the_schema_marks_them() -> None:
    config = {
        "host": "db.local",
        "password": "hunter2",
        "pin": 4321,
        "ref_key": "ref-secret",
        "credentials": {"kind": "oauth", "client_secret": "oauth-secret"},
        "replicas": [{"token": "t1"}, {"token": "t2"}, {"other": "visible"}],
        "extra": {"anything": "extra-secret"},
        "whole": {"a": "w1", "b": ["w2"]},
        "flag": True,
    }
    assert collect_secrets(SCHEMA, config) == {
        "hunter2",
        "4321",
        "ref-secret",
        "oauth-secret",
        "t1",
        "t2",
        "extra-secret",
        "w1",
        "w2",
    }


def test_the_masker_hides_secrets_and_their_escaped_forms() -> None:
    masker = SecretMasker()
    masker.add_all(['pa"ss\\word', "short", "shortest-first-not"])
    text = 'raw pa"ss\\word json "pa\\"ss\\\\word" repr \'pa"ss\\\\word\' shortest-first-not'
    masked = masker.mask(text)
    assert "ss" not in masked.replace("**********", "")
    assert masked.count(MASK) == 4
    assert masker.mask("nothing here") == "nothing here"


def test_the_logging_filter_masks_messages_arguments_and_tracebacks() -> None:
    masker = SecretMasker()
    masker.add("hunter2")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(MaskingFilter(masker))
    logger = logging.getLogger("ferry.test-masking")
    logger.addHandler(handler)
    try:
        logger.warning("password is %s", "hunter2")
        try:
            raise ValueError("bad password hunter2")
        except ValueError:
            logger.exception("failed with hunter2")
    finally:
        logger.removeHandler(handler)
    assert records[0] == f"password is {MASK}"
    assert records[1].startswith(f"failed with {MASK}\nTraceback")
    assert f"ValueError: bad password {MASK}" in records[1]
    assert "hunter2" not in "".join(records)
