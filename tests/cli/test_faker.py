"""The real thing: source-faker from PyPI, installed by `ferry connectors install` (cached)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from clikit import Ferry

pytestmark = pytest.mark.slow

CONFIG = "count: 10\nseed: 1\n"


def test_spec(ferry: Ferry, source_faker: str) -> None:
    result = ferry("spec", source_faker)
    assert result.code == 0, result.err
    spec = json.loads(result.out)
    assert spec["connectionSpecification"]["title"] == "Faker Source Spec"


def test_check(ferry: Ferry, source_faker: str, write_config: Callable[..., str]) -> None:
    result = ferry("check", source_faker, "--config", write_config(CONFIG, ".yaml"))
    assert (result.code, result.out) == (0, "SUCCEEDED\n"), result.err


def test_discover_lists_products_users_purchases(
    ferry: Ferry, source_faker: str, write_config: Callable[..., str]
) -> None:
    config = write_config(CONFIG, ".yaml")
    result = ferry("discover", source_faker, "--config", config)
    assert result.code == 0, result.err
    streams = [line.split()[0] for line in result.out.splitlines()[1:]]
    assert sorted(streams) == ["products", "purchases", "users"]
    assert "full_refresh, incremental" in result.out
    catalog = json.loads(ferry("discover", source_faker, "--config", config, "--json").out)
    assert sorted(s["name"] for s in catalog["streams"]) == ["products", "purchases", "users"]


def test_a_config_faker_rejects_is_caught_before_it_runs(
    ferry: Ferry, source_faker: str, write_config: Callable[..., str]
) -> None:
    result = ferry("check", source_faker, "--config", write_config('{"count": -1}'))
    assert result.code == 2
    assert "config.count: -1 is less than the minimum of 1" in result.err


def test_connectors_list_shows_it(ferry: Ferry, source_faker: str) -> None:
    [entry] = json.loads(ferry("connectors", "list", "--json").out)
    assert (entry["name"], entry["package"], entry["version"]) == (
        "source-faker",
        "airbyte-source-faker",
        "7.2.1",
    )
    assert entry["executable"].endswith("/connectors/source-faker/bin/source-faker")


def test_by_a_real_ferry_process(ferry_process: Ferry, source_faker: str) -> None:
    result = ferry_process("spec", source_faker, "--json")
    assert result.code == 0, result.err
    assert "count" in json.loads(result.out)["connectionSpecification"]["properties"]
