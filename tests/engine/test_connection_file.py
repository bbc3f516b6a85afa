"""Connection files: idle timeouts and YAML scalars, parsed as plain data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ferry.engine.connection import (
    DEFAULT_IDLE_SECONDS,
    IdleTimeouts,
    load_connection,
    parse_connection,
    parse_duration,
)
from ferry.errors import ConfigError

BASE = {"name": "c", "source": {"connector": "a"}, "destination": {"connector": "b"}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5), (90, 90), (2.5, 2.5), ("30s", 30), ("30m", 1800), ("2h", 7200), (" 1.5h ", 5400)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text, "here") == seconds


@pytest.mark.parametrize("text", ["", "soon", "5d", "-1", "0", "1h30m", True, None, [1]])
def test_what_is_not_a_duration(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^here: "):
        parse_duration(text, "here")


def test_timeouts_default_to_hours_and_each_side_can_be_set() -> None:
    assert parse_connection(BASE).timeouts == IdleTimeouts()
    assert IdleTimeouts().source == IdleTimeouts().destination == DEFAULT_IDLE_SECONDS >= 3600
    timeouts = parse_connection({**BASE, "timeouts": {"source_idle": "30m"}}).timeouts
    assert timeouts == IdleTimeouts(source=1800, destination=DEFAULT_IDLE_SECONDS)


def test_an_unknown_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="timeouts: unknown key `write_idle`"):
        parse_connection({**BASE, "timeouts": {"write_idle": 5}})


def test_yaml_dates_stay_the_strings_written(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nsource: {connector: a, config: {start_date: 2024-01-01,"
        " at: 2024-01-01T10:00:00Z}}\ndestination: {connector: b}\n"
    )
    config = load_connection(path).source.config
    assert config == {"start_date": "2024-01-01", "at": "2024-01-01T10:00:00Z"}


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ({"namespace": "Not_Valid"}, "source.kubernetes.namespace: 'Not_Valid' is not a valid"),
        ({"namspace": "etl"}, "source.kubernetes: unknown key `namspace`"),
        (
            {"tolerations": [{"key": "a", "operatr": "Exists"}]},
            "tolerations[0].operatr: not a field of Toleration",
        ),
        ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory: invalid memory"),
        ({"host_network": "yes"}, "source.kubernetes.host_network: expected true or false"),
    ],
)
def test_a_bad_kubernetes_block_is_refused_when_the_file_is_read(
    tmp_path: Path, block: dict[str, object], says: str
) -> None:
    """Not when a pod starts: the error names the file, the key path and the problem."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "source": {"connector": "a", "kubernetes": block}}))
    with pytest.raises(ConfigError) as caught:
        load_connection(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert says in str(caught.value)
    assert caught.value.exit_code == 2


def test_the_options_of_a_connector_block_are_read_into_one_schema() -> None:
    connection = parse_connection(
        {
            **BASE,
            "kubernetes": {"layout": "single-pod", "namespace": "etl"},
            "source": {
                "connector": "a",
                "pull": "always",
                "resources": {"memory": "1g", "cpu": 2},
                "kubernetes": {"resources": {"limits": {"cpu": 2}}},
            },
        }
    )
    options = connection.source.options
    assert (options.pull, options.memory, options.cpu) == ("always", "1g", "2")
    assert options.kubernetes.resources == {"limits": {"cpu": "2"}}
    assert connection.kubernetes.single_pod
    assert connection.kubernetes.namespace == "etl"
    with pytest.raises(ConfigError, match=r"source\.pull: "):
        parse_connection({**BASE, "source": {"connector": "a", "pull": "sometimes"}})


def test_a_kubernetes_key_set_to_null_keeps_its_default(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nkubernetes:\nsource:\n  connector: a\n  kubernetes:\n    labels:\n"
        "    termination_grace_period_seconds:\n    namespace: etl\ndestination: {connector: b}\n"
    )
    connection = load_connection(path)
    settings = connection.source.options.kubernetes
    assert settings.labels == {}
    assert settings.termination_grace_period_seconds == 30
    assert settings.namespace == "etl"
    assert not connection.kubernetes.single_pod
