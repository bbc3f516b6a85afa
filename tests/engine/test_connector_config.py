"""Configs that connectors update (CONTROL CONNECTOR_CONFIG), the platform's environment and
destination catalogs, end to end with real connector processes and the real SQLite store.

The rotating source (tests/engine/data/rotating_source.py) accepts only the last refresh token it
issued and issues a new one on every check, discover and read: a sync only succeeds when ferry
ran the `read` with the token the `discover` just rotated, and the next sync with the one `read`
rotated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from synckit import (
    PLATFORM_ENV,
    RECORDING,
    ROTATING,
    SCRIPTED,
    dumped_env,
    ferry,
    issued_token,
    rotating_source,
    sync_json,
    write_connection,
)

from ferry.engine.config import load_config, rewrite_config_file
from ferry.errors import ConfigError
from ferry.protocol.catalog import check_destination_operations
from ferry.protocol.messages import (
    AirbyteStream,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
    DestinationCatalog,
    DestinationOperation,
)
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, ConnectorRef
from ferry.store import SqliteStore, open_store

NAME = "rotation"


def stored_token(role: str = "source") -> str | None:
    with open_store(None) as store:
        stored = store.load_connector_config(NAME, role)  # type: ignore[arg-type]
    return None if stored is None else str(stored.config["refresh_token"])


def rotating_connection(tmp_path: Path, **options: Any) -> tuple[Path, Path]:
    shared = tmp_path / "shared"
    connection = write_connection(
        tmp_path,
        NAME,
        source=rotating_source(shared, **options),
        destination={"connector": "destination-null", "config": {}},
    )
    return connection, shared


def test_a_rotated_token_is_used_by_every_later_command(tmp_path: Path) -> None:
    connection, shared = rotating_connection(tmp_path, env={"DATA_CHANNEL_MEDIUM": "SOCKET"})
    for number in (1, 2, 3):  # discover then read rotate: tok-2, tok-4, tok-6
        code, summary, stderr = sync_json(connection)
        assert code == 0, stderr
        assert summary["records_sent"] == 5
        assert issued_token(shared) == stored_token() == f"tok-{2 * number}"
    assert "tok-" not in stderr, "a rotated token is a secret: masked"

    read = dumped_env(shared, "read")
    assert read["WORKER_JOB_ID"] == str(summary["run_id"])
    assert read["WORKER_JOB_ATTEMPT"] == "1"
    assert read["USE_STREAM_CAPABLE_STATE"] == "true"
    assert read["DATA_CHANNEL_FORMAT"] == "JSONL"
    assert read["DATA_CHANNEL_MEDIUM"] == "SOCKET", "the connection's env wins"
    assert "WORKER_CONNECTOR_IMAGE" not in read, "a local connector has no image"
    # discover runs before the run exists: a job id of its own.
    assert dumped_env(shared, "discover")["WORKER_JOB_ID"] not in ("", str(summary["run_id"]))

    (shared / "crash").touch()  # the read rotates, then crashes
    code, summary, stderr = sync_json(connection, "--retries", "0")
    assert code == 3, stderr
    assert summary["status"] == "failed"
    assert issued_token(shared) == stored_token() == "tok-8"

    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert issued_token(shared) == "tok-10"

    (shared / "crash").touch()  # crashes again: the retry reads with the token the crash rotated
    code, summary, stderr = sync_json(connection)
    assert code == 0, stderr
    assert summary["attempts"] == 2
    assert dumped_env(shared, "read")["WORKER_JOB_ATTEMPT"] == "2"
    assert issued_token(shared) == stored_token() == "tok-13"


def test_the_connection_file_wins_over_a_stored_config(tmp_path: Path) -> None:
    connection, shared = rotating_connection(tmp_path)
    code, _, stderr = sync_json(connection)
    assert code == 0, stderr
    # The user authorises again (the API hands out tok-50) and edits the file.
    (shared / "token").write_text("tok-50")
    data = yaml.safe_load(connection.read_text())
    data["source"]["config"]["refresh_token"] = "tok-50"
    connection.write_text(yaml.safe_dump(data))
    code, _, stderr = sync_json(connection)
    assert code == 0, stderr
    assert "the file wins, the stored config is discarded" in stderr
    assert issued_token(shared) == stored_token() == "tok-52"


def test_config_show_masks_and_reset_drops(tmp_path: Path) -> None:
    connection, shared = rotating_connection(tmp_path)
    code, _, stderr = sync_json(connection)
    assert code == 0, stderr

    shown = ferry("config", "show", str(connection))
    assert shown.returncode == 0, shown.stderr
    configs = json.loads(shown.stdout)
    assert configs["destination"] is None
    assert configs["source"]["config"]["refresh_token"] == "**********"
    assert configs["source"]["config"]["token_file"] == str(shared / "token")
    assert configs["source"]["file_changed"] is False
    assert "tok-" not in shown.stdout + shown.stderr

    reset = ferry("config", "reset", str(connection), "--source")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.strip() == f"{NAME}: dropped the stored source config"
    assert json.loads(ferry("config", "show", str(connection)).stdout)["source"] is None
    # Back to the file's tok-0, which the source no longer accepts: discover's config error.
    code, _, stderr = sync_json(connection)
    assert code == 1
    assert "refresh token ********** is not the latest issued one" in stderr
    assert "tok-0" not in stderr


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_check_and_discover_write_the_updated_config_back(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    config = rotating_source(shared)["config"]
    config["token_file"] = "${ROTATION_DIR}/token"  # a reference the rewrite keeps
    monkeypatch.setenv("ROTATION_DIR", str(shared))
    path = tmp_path / f"config.{kind}"
    original = json.dumps(config, indent=4) if kind == "json" else yaml.safe_dump(config)
    path.write_text(original)

    checked = ferry("check", str(ROTATING), "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "SUCCEEDED"
    assert f"wrote it to {path} (the previous content is in {path}.bak)" in checked.stderr
    assert Path(f"{path}.bak").read_text() == original
    text = path.read_text()
    assert text.lstrip().startswith("{") == (kind == "json")
    assert yaml.safe_load(text) == {**config, "refresh_token": "tok-1"}

    discovered = ferry("discover", str(ROTATING), "--config", str(path))
    assert discovered.returncode == 0, discovered.stderr
    assert "items" in discovered.stdout
    assert load_config(path)["refresh_token"] == issued_token(shared) == "tok-2"
    assert "tok-" not in checked.stdout + checked.stderr + discovered.stdout + discovered.stderr


def test_rewrite_keeps_the_file_private_and_new_references_literal(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": "x"}')
    path.chmod(0o600)
    rewrite_config_file(path, {"a": "${NOT_A_REFERENCE}"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_config(path, env={}) == {"a": "${NOT_A_REFERENCE}"}


def test_the_store_keeps_one_config_per_connection_and_role(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "ferry.db") as store:
        assert store.load_connector_config("c", "source") is None
        store.save_connector_config("c", "source", {"token": "a"}, "f1")
        store.save_connector_config("c", "source", {"token": "b"}, "f2")
        store.save_connector_config("c", "destination", {"token": "d"}, "f3")
        stored = store.load_connector_config("c", "source")
        assert stored is not None
        assert (stored.config, stored.file_fingerprint, stored.role) == (
            {"token": "b"},
            "f2",
            "source",
        )
        assert store.reset_connector_config("c", "source") is True
        assert store.reset_connector_config("c", "source") is False
        assert store.load_connector_config("c", "destination") is not None
        assert store.reset_connector_config("c") is True
        assert store.load_connector_config("c", "destination") is None


def test_every_runtime_gets_the_platform_environment() -> None:
    """One place computes it; each runtime applies `invocation.environment` (see the runtime
    tests and the syncs above for what the connectors actually see)."""
    options = ConnectorOptions(env={"WORKER_JOB_ATTEMPT": "mine"})
    image = ConnectorInvocation(
        ConnectorRef("docker", "airbyte/source-x:1.0", options=options), "read", job_id="42"
    )
    assert image.environment == {
        "WORKER_JOB_ID": "42",
        "WORKER_JOB_ATTEMPT": "mine",
        "WORKER_CONNECTOR_IMAGE": "airbyte/source-x:1.0",
        "USE_STREAM_CAPABLE_STATE": "true",
        "DATA_CHANNEL_MEDIUM": "STDIO",
        "DATA_CHANNEL_FORMAT": "JSONL",
    }
    local = ConnectorInvocation(ConnectorRef("local", "/bin/true"), "check")
    assert set(local.environment) == set(PLATFORM_ENV)
    assert (
        local.environment["WORKER_JOB_ID"] != ConnectorInvocation(local.connector, "check").job_id
    )


# -- destination catalogs ----------------------------------------------------------------------

OFFERED = [{"object_name": "contacts", "sync_mode": "update", "matching_keys": [["id"]]}]


def test_discover_prints_a_destination_catalog(tmp_path: Path) -> None:
    config = tmp_path / "destination.json"
    config.write_text(json.dumps({"operations": OFFERED}))
    table = ferry("discover", RECORDING, "--config", str(config))
    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n")[1].split() == ["contacts", "update", "id"]
    as_json = ferry("discover", RECORDING, "--config", str(config), "--json")
    offered = [{**OFFERED[0], "json_schema": {"type": "object"}}]
    assert json.loads(as_json.stdout) == {"operations": offered}


def operations_connection(tmp_path: Path, stream: dict[str, Any], **destination: Any) -> Path:
    return write_connection(
        tmp_path,
        source={"connector": SCRIPTED, "config": {"count": 3, "state_every": 3}},
        destination={
            "connector": RECORDING,
            "config": {"operations": OFFERED, "record_to": str(tmp_path / "in"), **destination},
        },
        streams=[{"name": "items", "sync_mode": "full_refresh", **stream}],
    )


def test_an_offered_destination_operation_syncs(tmp_path: Path) -> None:
    """The destination also sends its config back (CONTROL) from discover and from write."""
    stream = {"destination_object_name": "contacts", "destination_sync_mode": "update"}
    code, summary, stderr = sync_json(operations_connection(tmp_path, stream, control=True))
    assert code == 0, stderr
    assert summary["records_sent"] == 3
    received = [json.loads(line) for line in (tmp_path / "in").read_text().splitlines()]
    assert sum(message["type"] == "RECORD" for message in received) == 3
    with open_store(None) as store:
        stored = store.load_connector_config("test-connection", "destination")
    assert stored is not None
    assert stored.config["controls"] == 2, "write ran with the config discover sent"


@pytest.mark.parametrize(
    ("stream", "destination", "error"),
    [
        (
            {"destination_object_name": "contacts", "destination_sync_mode": "soft_delete"},
            {},
            "stream 'items': the destination offers no 'soft_delete' operation on 'contacts';"
            " it offers 'contacts' with update",
        ),
        (
            {"destination_object_name": "contacts", "destination_sync_mode": "update"},
            {"discover": False},
            "stream 'items': destination_object_name 'contacts' needs a destination that lists"
            " its objects and modes in a DESTINATION_CATALOG, and this one does not (its"
            " discover failed",
        ),
    ],
    ids=["mode-not-offered", "no-discover"],
)
def test_destination_operations_are_checked_before_anything_is_written(
    tmp_path: Path, stream: dict[str, Any], destination: dict[str, Any], error: str
) -> None:
    code, _, stderr = sync_json(operations_connection(tmp_path, stream, **destination))
    assert code == 2, stderr
    assert error in stderr
    assert not (tmp_path / "in").exists(), "the destination never ran its write"


def configured(destination_sync_mode: str, object_name: str | None) -> ConfiguredAirbyteCatalog:
    stream = ConfiguredAirbyteStream(
        stream=AirbyteStream("items", {}, ["full_refresh"]),
        sync_mode="full_refresh",
        destination_sync_mode=destination_sync_mode,
        destination_object_name=object_name,
    )
    return ConfiguredAirbyteCatalog([stream])


@pytest.mark.parametrize(
    ("mode", "name", "offered", "error"),
    [
        (
            "update",
            "leads",
            True,
            "offers no 'update' operation on 'leads'; its objects are contacts",
        ),
        ("update", None, True, "destination_sync_mode 'update' needs destination_object_name"),
        ("soft_delete", None, False, "destination_sync_mode 'soft_delete' needs a destination"),
        ("append", "contacts", False, "destination_object_name 'contacts' needs a destination"),
        ("append", None, False, None),
        ("update", "contacts", True, None),
    ],
)
def test_which_streams_a_destination_catalog_allows(
    mode: str, name: str | None, offered: bool, error: str | None
) -> None:
    catalog = configured(mode, name)
    operations = DestinationCatalog([DestinationOperation("contacts", "update")])
    if error is None:
        check_destination_operations(catalog, operations if offered else None)
    else:
        with pytest.raises(ConfigError, match=re.escape(error)):
            check_destination_operations(catalog, operations if offered else None, "no discover")
