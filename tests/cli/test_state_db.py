"""Choosing the state store from the command line: --state-db, FERRY_STATE_DB, `${NAME}` in the
URL, and a password that never shows (the server here refuses connections: port 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from clikit import Ferry

PASSWORD = "Zq8-store-secret"
UNREACHABLE = "postgresql://ferry:{password}@127.0.0.1:1/ferry"


@pytest.fixture
def connection(tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "c",
                "source": {"connector": "source-generator"},
                "destination": {"connector": "destination-null"},
            }
        )
    )
    return str(path)


def test_a_password_typed_on_the_command_line_is_warned_about_and_masked(
    ferry: Ferry, connection: str
) -> None:
    result = ferry("runs", connection, "--state-db", UNREACHABLE.format(password=PASSWORD))
    assert result.code == 3
    assert (
        "cannot connect to the state store postgresql://ferry:***@127.0.0.1:1/ferry" in result.err
    )
    assert "`ps` shows it" in result.err
    assert PASSWORD not in result.out + result.err


def test_the_url_from_the_environment_with_its_password_in_another_variable(
    ferry: Ferry, connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_STATE_DB", UNREACHABLE.format(password="${STORE_PASSWORD}"))
    result = ferry("state", "show", connection)
    assert result.code == 2
    assert "STORE_PASSWORD (used in the state store URL)" in result.err

    monkeypatch.setenv("STORE_PASSWORD", PASSWORD)
    result = ferry("state", "show", connection)
    assert result.code == 3
    assert "cannot connect to the state store" in result.err
    assert "`ps` shows it" not in result.err
    assert PASSWORD not in result.out + result.err


def test_state_db_wins_over_the_environment(
    ferry: Ferry, connection: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FERRY_STATE_DB", UNREACHABLE.format(password=PASSWORD))
    result = ferry("runs", connection, "--state-db", str(tmp_path / "local.db"))
    assert result.code == 0, result.err
    assert (tmp_path / "local.db").exists()
