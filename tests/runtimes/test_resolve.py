"""Connector references: prefixes, installed names, ferry's own scripts, PATH, paths."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from ferry.errors import ConfigError, ConnectorNotFound
from ferry.runtimes import check_options_apply
from ferry.runtimes.base import ConnectorOptions, ConnectorRef
from ferry.runtimes.local.install import MANIFEST
from ferry.runtimes.options import KubernetesSettings, Resources
from ferry.runtimes.resolve import resolve_reference


def executable(path: Path, text: str = "#!/bin/sh\necho hi\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_install(ferry_home: Path, name: str) -> Path:
    """A connector dir as `ferry connectors install` leaves it (without running pip)."""
    venv = ferry_home / "connectors" / name
    script = executable(venv / "bin" / name)
    manifest = {
        "name": name,
        "package": f"airbyte-{name}",
        "version": "1.0",
        "executable": f"bin/{name}",
    }
    (venv / MANIFEST).write_text(json.dumps(manifest))
    return script


@pytest.mark.parametrize(
    ("reference", "runtime", "target"),
    [
        ("docker:airbyte/source-faker:6.2.20", "docker", "airbyte/source-faker:6.2.20"),
        ("podman:localhost:5000/source-faker:dev", "podman", "localhost:5000/source-faker:dev"),
        (
            "kubernetes:registry.example.com/a/b@sha256:abc",
            "kubernetes",
            "registry.example.com/a/b@sha256:abc",
        ),
    ],
)
def test_an_image_prefix_wins(reference: str, runtime: str, target: str) -> None:
    options = ConnectorOptions(env={"A": "1"})
    ref = resolve_reference(reference, default_runtime="local", options=options)
    assert ref == ConnectorRef(runtime, target, options=options)


def test_without_prefix_a_container_default_runtime_takes_the_reference_as_image() -> None:
    ref = resolve_reference("airbyte/source-faker:6.2.20", default_runtime="podman")
    assert (ref.runtime, ref.target) == ("podman", "airbyte/source-faker:6.2.20")
    assert ref.display == "podman:airbyte/source-faker:6.2.20"


def test_an_explicit_local_prefix_wins_over_a_container_default(tmp_path: Path) -> None:
    script = executable(tmp_path / "my-source")
    ref = resolve_reference(f"local:{script}", default_runtime="docker")
    assert ref == ConnectorRef("local", str(script))


def test_an_installed_connector_comes_first(
    ferry_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = fake_install(ferry_home, "source-thing")
    executable(tmp_path / "path-bin" / "source-thing")  # also on PATH: loses
    monkeypatch.setenv("PATH", f"{tmp_path / 'path-bin'}:/usr/bin:/bin")
    assert resolve_reference("source-thing").target == str(installed)


def test_first_party_scripts_resolve_without_an_activated_venv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # ferry's venv is not on PATH
    ref = resolve_reference("source-generator")
    assert ref.target == str(Path(sys.executable).parent / "source-generator")


def test_a_command_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = executable(tmp_path / "bin" / "source-on-path")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert resolve_reference("source-on-path") == ConnectorRef("local", str(script))


def test_a_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = executable(tmp_path / "connectors" / "source.sh")
    monkeypatch.chdir(tmp_path)
    assert resolve_reference("./connectors/source.sh").target == str(script)


def test_a_path_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "source.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ConnectorNotFound, match="not executable") as caught:
        resolve_reference(str(script))
    assert caught.value.exit_code == 2


def test_a_directory_is_not_a_connector(tmp_path: Path) -> None:
    with pytest.raises(ConnectorNotFound, match="is a directory"):
        resolve_reference(str(tmp_path))


def test_an_unknown_name_says_what_was_tried_and_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ConnectorNotFound) as caught:
        resolve_reference("source-nowhere")
    message = str(caught.value)
    assert "installed connectors" in message
    assert "PATH" in message
    assert "ferry connectors install source-nowhere" in message
    assert caught.value.exit_code == 2


def test_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConnectorNotFound, match="does not exist"):
        resolve_reference(str(tmp_path / "nope" / "source.sh"))


def test_an_unknown_prefix_is_part_of_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ConnectorNotFound, match="'ftp:source'"):
        resolve_reference("ftp:source")


def test_an_empty_image_and_an_unknown_runtime_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="names no connector"):
        resolve_reference("docker:")
    with pytest.raises(ConfigError, match="unknown runtime 'vm'"):
        resolve_reference("source-faker", default_runtime="vm")


@pytest.mark.parametrize(
    ("runtime", "options", "message"),
    [
        (
            "podman",
            ConnectorOptions(network="host"),
            "network does not apply to the podman runtime",
        ),
        ("kubernetes", ConnectorOptions(network="n"), "kubernetes: {host_network: ...}"),
        (
            "local",
            ConnectorOptions(resources=Resources(memory="1g", cpu="1")),
            "resources.memory, resources.cpu do not apply to the local",
        ),
        ("local", ConnectorOptions(relay=True), "relay does not apply to the local runtime"),
        (
            "docker",
            ConnectorOptions(kubernetes=KubernetesSettings(namespace="x")),
            "only to podman and kubernetes",
        ),
        ("local", ConnectorOptions(pull="always"), "only to docker and podman and kubernetes"),
    ],
)
def test_an_option_the_runtime_would_ignore_is_an_error(
    runtime: str, options: ConnectorOptions, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options_apply(runtime, options)


@pytest.mark.parametrize("runtime", ["local", "docker", "podman", "kubernetes"])
def test_options_a_runtime_honours_pass(runtime: str) -> None:
    check_options_apply(runtime, ConnectorOptions(env={"A": "1"}))
    honoured = {
        "docker": ConnectorOptions(
            network="host", resources=Resources(memory="1g"), relay=True, pull="never"
        )
    }
    check_options_apply(runtime, honoured.get(runtime, ConnectorOptions()))
