"""The single-pod layout played for real by podman: source, destination and pump in one pod.

Syncs go through the CLI (`python -m ferry sync --json`): the pump container runs ferry's
routing from the ferry image (FERRY_IMAGE), only the control stream reaches the launching ferry,
which commits a state when the destination's echo arrives.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from podkit import (
    GENERATOR,
    NO_ENTRYPOINT,
    NOTHING,
    NULL,
    ferry_sync,
    leftovers,
    now_rfc3339,
    pods_created,
    stream_records,
    write_connection,
)

from ferry.engine.single_pod import SinglePodAttempt
from ferry.engine.sync import AttemptOutcome, AttemptPlan
from ferry.errors import ConnectorCrashed
from ferry.protocol.messages import ConfiguredAirbyteCatalog
from ferry.runtimes.base import ConnectorOptions, ConnectorRef, RunLabels
from ferry.runtimes.options import PodLayout
from ferry.runtimes.pods.podman import PodmanRuntime
from ferry.store import open_store

pytestmark = pytest.mark.podman

SINGLE_POD = {"layout": "single-pod"}


def blind_to(other: str, command: str) -> str:
    """An entrypoint that fails (exit 1) when the other connector's config file is visible."""
    return f"test ! -e /ferry/files/{other}-config.json && {command}"


# The images' own entrypoints, each behind a check that the container cannot see the other
# connector's config (its credentials): the pod mounts each container only its own keys.
BLIND = {
    "source": {"entrypoint": blind_to("destination", "/opt/connector/bin/source-generator")},
    "destination": {"entrypoint": blind_to("source", "/opt/connector/bin/destination-null")},
}


def generator_to_null(
    tmp_path: Path,
    name: str,
    source: dict[str, Any],
    destination: dict[str, Any] | None = None,
    *,
    blind: bool = False,
) -> Path:
    return write_connection(
        tmp_path,
        name,
        runtime="podman",
        kubernetes=SINGLE_POD,
        source={"connector": GENERATOR, "config": source, **(BLIND["source"] if blind else {})},
        destination={
            "connector": NULL,
            "config": destination or {},
            **(BLIND["destination"] if blind else {}),
        },
    )


def test_incremental_rerun_resumes_from_the_committed_state(
    podman_images: None, connection_name: str, tmp_path: Path
) -> None:
    """The state committed from the echoes of the first run reaches the second run's source;
    neither connector sees the other's config file (else its entrypoint exits 1). A sync with
    the config the last one discovered with starts no discover pod: the catalog is cached."""
    first = {"count": 12000, "streams": 2, "state_every": 5000}
    connection = generator_to_null(tmp_path, connection_name, first, blind=True)
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert stream_records(summary) == {"stream_0": 12000, "stream_1": 12000}
    assert summary["states_committed"] == 6
    more = {**first, "count": 15000}
    connection = generator_to_null(tmp_path, connection_name, more)
    since = now_rfc3339()
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert stream_records(summary) == {"stream_0": 3000, "stream_1": 3000}
    second = pods_created(connection_name, since)
    assert [name for name in second if "-discover-" in name]
    code, summary, stderr = ferry_sync(connection)
    assert code == 0, stderr
    assert stream_records(summary) == {"stream_0": 0, "stream_1": 0}
    # `since` has whole seconds: the second sync's pods are listed again, and left out here
    [single_pod] = [name for name in pods_created(connection_name, since) if name not in second]
    assert "-discover-" not in single_pod
    assert leftovers(connection_name) == NOTHING


@pytest.mark.parametrize(
    ("source", "destination", "failed"),
    [
        ({"fail_after": 12000}, {}, "source"),
        ({}, {"fail_after": 12000}, "destination"),
    ],
    ids=["source-crash", "destination-crash"],
)
def test_a_crash_keeps_what_was_echoed(
    podman_images: None,
    connection_name: str,
    tmp_path: Path,
    source: dict[str, Any],
    destination: dict[str, Any],
    failed: str,
) -> None:
    """A source crash: the destination drains and echoes what it got (2 states); a destination
    crash: the source is stopped, only what was echoed before is committed."""
    config = {"count": 30000, "state_every": 5000, **source}
    connection = generator_to_null(tmp_path, connection_name, config, destination)
    code, summary, stderr = ferry_sync(connection, "--retries", "0")
    assert code != 0, stderr
    assert summary["status"] == "failed"
    assert failed in summary["error"], summary["error"]
    if failed == "source":
        assert summary["states_committed"] == 2  # 10000 records, echoed after the crash
        with open_store(None) as store:
            state = json.loads(store.load_state(connection_name).state_file() or b"[]")
        assert [s["stream"]["stream_state"] for s in state] == [{"cursor": 10000}]
    else:
        assert summary["states_committed"] <= 2  # what was echoed before the crash
    assert leftovers(connection_name) == NOTHING


def users_plan(source: ConnectorRef, connection: str) -> AttemptPlan:
    """A plan for faker's users stream, built without spec or discover (they would run the
    image in pods of their own first)."""
    catalog = msgspec.convert(
        {
            "streams": [
                {
                    "stream": {
                        "name": "users",
                        "json_schema": {"type": "object"},
                        "supported_sync_modes": ["full_refresh"],
                    },
                    "sync_mode": "full_refresh",
                    "destination_sync_mode": "append",
                }
            ]
        },
        ConfiguredAirbyteCatalog,
    )
    return AttemptPlan(
        source=source,
        destination=ConnectorRef("podman", NULL),
        source_config=b'{"count": 10, "seed": 1}',
        destination_config=b"{}",
        catalog=catalog,
        labels=RunLabels("1", connection),
    )


def test_missing_entrypoint_is_explained_and_auto_derives_it(
    podman_images: None, connection_name: str
) -> None:
    async def attempt(options: ConnectorOptions) -> AttemptOutcome:
        plan = users_plan(ConnectorRef("podman", NO_ENTRYPOINT, options=options), connection_name)
        runtime = PodmanRuntime()
        layout = PodLayout.parse(SINGLE_POD)
        try:
            return await SinglePodAttempt(
                plan, {"podman": runtime}, None, lambda s: None, layout
            ).run()
        finally:
            await runtime.close()

    missing = asyncio.run(attempt(ConnectorOptions()))
    assert isinstance(missing.error, ConnectorCrashed)
    assert "the source exited with code 127" in str(missing.error)
    assert f"AIRBYTE_ENTRYPOINT is not set in image {NO_ENTRYPOINT}" in str(missing.error)
    auto = asyncio.run(attempt(ConnectorOptions(entrypoint="auto")))
    assert auto.error is None, auto.error
    assert auto.stats.records_sent == 10
    assert leftovers(connection_name) == NOTHING
