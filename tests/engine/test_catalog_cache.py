"""Cached catalogs: `ferry sync` runs a source's discover once per connector code, config and day.

The source is the real source-generator behind a wrapper script in the test's directory that
appends each verb it runs to `<wrapper>.verbs`, so the tests count real discover runs.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from synckit import RECORDING, SCRIPTED, ferry, issued_token, rotating_source, write_connection

import ferry as ferry_api
from ferry.engine import catalog_cache
from ferry.engine.catalog_cache import CatalogKey, entry_name
from ferry.protocol.messages import (
    CATALOG,
    DESTINATION_CATALOG,
    AirbyteCatalog,
    AirbyteStream,
)
from ferry.runtimes.local.process import executable_fingerprint
from ferry.runtimes.resolve import resolve_reference

SECRET = "s3cr3t-Tok3n-for-the-cache"
USED = "source: catalog from the cache (discovered"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    generator = Path(sys.executable).parent / "source-generator"
    wrapper = tmp_path / "counting-generator.sh"
    wrapper.write_text(
        f'#!/bin/sh\necho "$1" >> "$0.verbs"\nexec {shlex.quote(str(generator))} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def discovers(source: Path) -> int:
    verbs = source.with_name(f"{source.name}.verbs")
    return verbs.read_text().split().count("discover") if verbs.exists() else 0


def generator_connection(tmp_path: Path, source: Path, **config: Any) -> Path:
    return write_connection(
        tmp_path,
        "cached-catalog",
        source={"connector": str(source), "config": {"count": 2, "token": SECRET, **config}},
        destination={"connector": "destination-null", "config": {}},
        streams=[{"name": "stream_0"}],
    )


def sync(connection: Path, *extra: str) -> str:
    """`ferry -v sync` (-v shows the info line of a cache hit); its stderr."""
    result = ferry("-v", "sync", str(connection), "--no-progress", *extra)
    assert result.returncode == 0, result.stderr
    return result.stderr


def cached(ferry_home: Path) -> list[Path]:
    return sorted((ferry_home / "cache" / "catalogs").glob("*.json"))


def test_a_second_sync_uses_the_cached_catalog_until_the_config_changes(
    tmp_path: Path, source: Path, ferry_home: Path
) -> None:
    connection = generator_connection(tmp_path, source)
    assert USED not in sync(connection)
    assert discovers(source) == 1
    assert USED in sync(connection)
    assert discovers(source) == 1

    [entry] = cached(ferry_home)
    directory = entry.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / catalog_cache.KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [catalog_cache.KEY_FILE, entry.name]
    text = entry.read_text()
    assert SECRET not in text, "the file holds no config"
    assert '"token"' not in text
    assert json.loads(text)["catalog"]["streams"][0]["name"] == "stream_0"

    assert USED not in sync(generator_connection(tmp_path, source, count=3))
    assert discovers(source) == 2
    assert USED not in sync(connection, "--no-catalog-cache")
    assert discovers(source) == 3
    assert USED in sync(connection)  # the catalog --no-catalog-cache refreshed
    assert discovers(source) == 3


def test_the_python_api_takes_catalog_cache(tmp_path: Path, source: Path) -> None:
    connection = generator_connection(tmp_path, source)
    assert ferry_api.sync(connection).status == "succeeded"
    assert ferry_api.sync(connection).status == "succeeded"
    assert discovers(source) == 1
    assert ferry_api.sync(connection, catalog_cache=False).status == "succeeded"
    assert discovers(source) == 2


def test_an_expired_a_corrupt_or_an_unfitting_cached_catalog_is_discovered_again(
    tmp_path: Path, source: Path, ferry_home: Path
) -> None:
    connection = generator_connection(tmp_path, source)
    sync(connection)
    [entry] = cached(ferry_home)
    aged = json.loads(entry.read_text())
    aged["discovered_at"] -= catalog_cache.MAX_AGE_SECONDS + 60
    entry.write_text(json.dumps(aged))
    assert USED not in sync(connection)
    assert discovers(source) == 2
    assert time.time() - json.loads(entry.read_text())["discovered_at"] < 600  # rewritten

    entry.write_text('{"name": "trunc')
    assert USED not in sync(connection)
    assert discovers(source) == 3
    assert json.loads(entry.read_text())["kind"] == CATALOG

    # A cached catalog that lacks a stream the connection names (the source gained it since):
    # discovered again rather than refused.
    missing = json.loads(entry.read_text())
    missing["catalog"]["streams"] = []
    entry.write_text(json.dumps(missing))
    stderr = sync(connection)
    assert "the cached catalog does not fit" in stderr
    assert discovers(source) == 4
    assert USED in sync(connection)
    assert discovers(source) == 4


def test_a_discover_that_updates_the_config_is_cached_under_the_new_config(
    tmp_path: Path,
) -> None:
    """The rotating source sends a new token on discover (tok-0 → tok-1) and on read."""
    shared = tmp_path / "shared"
    block = rotating_source(shared)
    connection = write_connection(
        tmp_path,
        "rotating",
        source=block,
        destination={"connector": "destination-null", "config": {}},
    )
    sync(connection)
    assert issued_token(shared) == "tok-2"
    ref = resolve_reference(block["connector"], default_runtime="local")
    fingerprint = executable_fingerprint(ref)
    assert fingerprint is not None

    def cached_for(token: str) -> bool:
        # The config's keys in the connection file's order (write_connection sorts them).
        config = json.dumps(dict(sorted({**block["config"], "refresh_token": token}.items())))
        key = CatalogKey(fingerprint, CATALOG, config.encode())
        return catalog_cache.load_catalog(key) is not None

    assert [cached_for(token) for token in ("tok-0", "tok-1")] == [False, True]


def test_a_destination_catalog_is_cached_and_a_failed_discover_is_not(
    tmp_path: Path, ferry_home: Path
) -> None:
    """A stream that names a destination object needs the destination's DESTINATION_CATALOG."""

    def connection(**destination: Any) -> Path:
        operations = [{"object_name": "contacts", "sync_mode": "update", "matching_keys": []}]
        return write_connection(
            tmp_path,
            source={"connector": SCRIPTED, "config": {"count": 3}},
            destination={
                "connector": RECORDING,
                "config": {
                    "operations": operations,
                    "record_to": str(tmp_path / "in"),
                    **destination,
                },
            },
            streams=[
                {
                    "name": "items",
                    "sync_mode": "full_refresh",
                    "destination_object_name": "contacts",
                    "destination_sync_mode": "update",
                }
            ],
        )

    hit = "destination: catalog from the cache (discovered"
    assert hit not in sync(connection())
    assert hit in sync(connection())
    for _ in range(2):  # never cached: each sync asks the destination again, and fails
        failed = ferry("-v", "sync", str(connection(discover=False)), "--no-progress")
        assert failed.returncode == 2, failed.stderr
        assert "its discover failed" in failed.stderr
        assert "discover is not supported by this destination" in failed.stderr
    assert len(cached(ferry_home)) == 2  # the source's and the destination's catalogs


def test_entry_names_depend_on_the_code_config_kind_env_and_secret() -> None:
    secret = b"k" * catalog_cache.KEY_BYTES
    key = CatalogKey("code v1", CATALOG, b'{"password": "hunter2"}', {"REGION": "eu"})
    name = entry_name(secret, key)
    assert name == entry_name(secret, CatalogKey(key.fingerprint, CATALOG, key.config, {**key.env}))
    variants = [
        CatalogKey("code v2", CATALOG, key.config, key.env),
        CatalogKey(key.fingerprint, CATALOG, b'{"password": "hunter3"}', key.env),
        CatalogKey(key.fingerprint, DESTINATION_CATALOG, key.config, key.env),
        CatalogKey(key.fingerprint, CATALOG, key.config, {"REGION": "us"}),
    ]
    names = {entry_name(secret, variant) for variant in variants}
    assert len(names) == len(variants)
    assert name not in names
    assert entry_name(b"x" * catalog_cache.KEY_BYTES, key) != name


def test_entries_are_checked_and_the_key_is_made_once(ferry_home: Path) -> None:
    catalog = AirbyteCatalog(
        streams=[AirbyteStream(name="items", json_schema={}, supported_sync_modes=["full_refresh"])]
    )
    key = CatalogKey("code", CATALOG, b"{}")
    catalog_cache.store_catalog(key, catalog)
    secret = (ferry_home / "cache" / "catalogs" / catalog_cache.KEY_FILE).read_bytes()
    assert len(secret) == catalog_cache.KEY_BYTES
    found = catalog_cache.load_catalog(key)
    assert found is not None
    assert found.catalog == catalog
    assert 0 <= found.age < 60
    assert catalog_cache.load_catalog(key, max_age=0) is None
    # A file under another key's name (copied, or written for another config) is not trusted.
    [entry] = cached(ferry_home)
    other = CatalogKey("code", CATALOG, b'{"a": 1}')
    entry.with_name(f"{entry_name(secret, other)}.json").write_bytes(entry.read_bytes())
    assert catalog_cache.load_catalog(other) is None
    # Nor is an entry whose kind differs from the one asked for.
    assert catalog_cache.load_catalog(CatalogKey("code", DESTINATION_CATALOG, b"{}")) is None
    catalog_cache.store_catalog(other, catalog)
    assert catalog_cache.load_catalog(other) is not None
    assert (ferry_home / "cache" / "catalogs" / catalog_cache.KEY_FILE).read_bytes() == secret
    # Storing an entry removes those that expired (by their files' age).
    expired = time.time() - catalog_cache.MAX_AGE_SECONDS - 60
    os.utime(entry, (expired, expired))
    catalog_cache.store_catalog(other, catalog)
    assert not entry.exists()
    assert catalog_cache.load_catalog(other) is not None
