"""Cached connector specs: `ferry sync` runs a connector's spec once per version of its code.

The source is tests/connectors_sh/spec_counting.sh, copied into the test's directory: it appends
a line to `<itself>.spec-runs` whenever it runs `spec`, so the tests count real spec runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from synckit import ferry, write_connection

from ferry.engine import spec_cache
from ferry.protocol.messages import ConnectorSpecification

SECRET = "s3cr3t-Tok3n"


@pytest.fixture
def source(tmp_path: Path, connectors_sh: Path) -> Path:
    copy = tmp_path / "counting-source.sh"
    shutil.copy2(connectors_sh / "spec_counting.sh", copy)
    return copy


def spec_runs(source: Path) -> int:
    runs = source.with_name(f"{source.name}.spec-runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def touch(path: Path) -> None:
    """A newer mtime, without relying on the clock having ticked since the last write."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def counting_connection(tmp_path: Path, source: Path, api_key: str = SECRET) -> Path:
    return write_connection(
        tmp_path,
        "cached-spec",
        source={"connector": str(source), "config": {"api_key": api_key}},
        destination={"connector": "destination-null", "config": {}},
    )


def sync(connection: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`ferry -v sync`: -v shows the connectors' own log lines (where a secret could leak)."""
    return ferry("-v", "sync", str(connection), "--no-progress", *extra)


def test_a_second_sync_uses_the_cached_spec_to_validate_and_mask(
    tmp_path: Path, source: Path
) -> None:
    connection = counting_connection(tmp_path, source)
    first = sync(connection)
    assert first.returncode == 0, first.stderr
    second = sync(connection)
    assert second.returncode == 0, second.stderr
    assert spec_runs(source) == 1
    # The cached spec still marks api_key secret: the source's log line shows it masked.
    assert "reading with the key **********" in second.stderr
    assert SECRET not in second.stdout + second.stderr
    # ... and still validates the config.
    refused = sync(counting_connection(tmp_path, source, api_key="abc"))
    assert refused.returncode == 2
    assert "source.config.api_key: '**********' is too short" in refused.stderr
    assert spec_runs(source) == 1


def test_a_touched_or_replaced_executable_runs_spec_again(tmp_path: Path, source: Path) -> None:
    connection = counting_connection(tmp_path, source)
    for _ in range(2):
        assert sync(connection).returncode == 0
    assert spec_runs(source) == 1
    touch(source)
    assert sync(connection).returncode == 0
    assert spec_runs(source) == 2
    # A new version whose spec requires another field: the sync validates against that spec.
    replacement = tmp_path / "replacement.sh"
    replacement.write_text(
        source.read_text().replace('"required":["api_key"]', '"required":["api_key","region"]')
    )
    replacement.chmod(0o755)
    os.replace(replacement, source)
    refused = sync(connection)
    assert refused.returncode == 2
    assert "'region' is a required property" in refused.stderr
    assert spec_runs(source) == 3


def test_a_corrupt_cached_spec_is_ignored_and_rewritten(
    tmp_path: Path, source: Path, ferry_home: Path
) -> None:
    connection = counting_connection(tmp_path, source)
    assert sync(connection).returncode == 0
    cached = sorted((ferry_home / "cache" / "specs").glob("*.json"))
    assert len(cached) == 2  # the source's and destination-null's
    for path in cached:
        path.write_text('{"fingerprint": "trunc')
    result = sync(connection)
    assert result.returncode == 0, result.stderr
    assert "ignoring the cached spec" in result.stderr
    assert spec_runs(source) == 2
    for path in cached:
        assert json.loads(path.read_text())["spec"]["connectionSpecification"]["type"] == "object"
    assert sync(connection).returncode == 0
    assert spec_runs(source) == 2


def test_ferry_spec_always_runs_the_connector_and_refreshes_the_cache(
    tmp_path: Path, source: Path
) -> None:
    for _ in range(2):
        result = ferry("spec", str(source))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["connectionSpecification"]["required"] == ["api_key"]
    assert spec_runs(source) == 2
    assert sync(counting_connection(tmp_path, source)).returncode == 0
    assert spec_runs(source) == 2


def test_no_spec_cache_runs_spec_and_refreshes_the_cache(tmp_path: Path, source: Path) -> None:
    connection = counting_connection(tmp_path, source)
    assert sync(connection).returncode == 0
    assert sync(connection, "--no-spec-cache").returncode == 0
    assert spec_runs(source) == 2
    touch(source)
    assert sync(connection, "--no-spec-cache").returncode == 0
    assert sync(connection).returncode == 0  # uses the spec the previous sync refreshed
    assert spec_runs(source) == 3


def test_cache_files_are_private_named_by_the_fingerprint_hash_and_checked(
    ferry_home: Path,
) -> None:
    spec = ConnectorSpecification(connectionSpecification={"type": "object"})
    spec_cache.store_spec("connector A", spec)
    directory = ferry_home / "cache" / "specs"
    name = hashlib.sha256(b"connector A").hexdigest() + ".json"
    assert [p.name for p in directory.iterdir()] == [name]  # no temp file left
    assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert spec_cache.load_spec("connector A") == spec
    # A file under another fingerprint's name (copied, or a hash collision) is not trusted.
    shutil.copy(directory / name, spec_cache.cache_file("connector B"))
    assert spec_cache.load_spec("connector B") is None
