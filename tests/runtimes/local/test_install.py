"""Installing connectors into their own venvs: names, local wheels and projects, failures, PyPI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ferry.errors import InstallError
from ferry.runtimes.local.install import (
    MANIFEST,
    InstallTarget,
    find_installed,
    install_connector,
    list_installed,
    load_manifest,
    parse_install_target,
)
from ferry.runtimes.resolve import resolve_reference

MakeWheel = Callable[[str, str, dict[str, str]], Path]

TINY_MODULE = """
import json

def main():
    spec = {"connectionSpecification": {"type": "object"}}
    print(json.dumps({"type": "SPEC", "spec": spec}))
"""


def leftovers(ferry_home: Path) -> list[str]:
    return sorted(p.name for p in (ferry_home / "connectors").iterdir())


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("source-faker", InstallTarget("airbyte-source-faker", "source-faker")),
        ("destination-duckdb", InstallTarget("airbyte-destination-duckdb", "destination-duckdb")),
        ("source-faker==7.2.1", InstallTarget("airbyte-source-faker==7.2.1", "source-faker")),
        ("airbyte-source-faker", InstallTarget("airbyte-source-faker", "source-faker")),
        ("some-package==1.0", InstallTarget("some-package==1.0", None)),
    ],
)
def test_names_map_to_pypi_packages(text: str, target: InstallTarget) -> None:
    assert parse_install_target(text) == target


@pytest.mark.parametrize("text", ["source faker", "source-faker==", "==1.0", "-rf"])
def test_nonsense_is_refused_before_pip_runs(text: str) -> None:
    with pytest.raises(InstallError):
        parse_install_target(text)


def test_a_path_must_be_a_project_or_a_wheel(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match=r"without pyproject\.toml or setup\.py"):
        parse_install_target(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InstallError, match="neither a project directory nor a wheel"):
        parse_install_target(str(tmp_path / "notes.txt"))
    with pytest.raises(InstallError, match="does not exist"):
        parse_install_target(str(tmp_path / "missing.whl"))


def test_install_a_local_wheel_and_run_it(ferry_home: Path, make_wheel: MakeWheel) -> None:
    wheel = make_wheel("tiny-connector", "1.2.3", {"source-tiny": "main"})
    installed = install_connector(str(wheel))
    assert (installed.name, installed.package, installed.version) == (
        "source-tiny",
        "tiny-connector",
        "1.2.3",
    )
    assert installed.path == ferry_home / "connectors" / "source-tiny"
    assert leftovers(ferry_home) == ["source-tiny"], "no staging dir is left"
    # The venv was built elsewhere and moved: its scripts must point at the final place.
    assert installed.executable_path.read_text().startswith(f"#!{installed.path}/bin/python")
    ref = resolve_reference("source-tiny")
    assert ref.target == str(installed.executable_path)
    output = subprocess.run([ref.target, "spec"], capture_output=True, text=True, check=True)
    assert json.loads(output.stdout)["type"] == "SPEC"
    assert find_installed("source-tiny") == installed
    assert list_installed() == [installed]


def test_reinstalling_replaces_the_previous_install(
    ferry_home: Path, make_wheel: MakeWheel
) -> None:
    install_connector(str(make_wheel("tiny-connector", "1.0", {"source-tiny": "main"})))
    installed = install_connector(str(make_wheel("tiny-connector", "2.0", {"source-tiny": "main"})))
    assert installed.version == "2.0"
    assert load_manifest(ferry_home / "connectors" / "source-tiny") == installed
    assert leftovers(ferry_home) == ["source-tiny"]


def test_the_name_option_picks_the_script_and_the_install_name(
    ferry_home: Path, make_wheel: MakeWheel
) -> None:
    wheel = make_wheel(
        "two-tools", "0.1", {"source-one": "main", "source-two": "main", "helper": "main"}
    )
    with pytest.raises(InstallError, match="source-one, source-two"):
        install_connector(str(wheel))
    assert leftovers(ferry_home) == []
    installed = install_connector(str(wheel), name="source-two")
    assert (installed.name, installed.executable) == ("source-two", "bin/source-two")


def test_a_package_without_a_connector_script_leaves_nothing(
    ferry_home: Path, make_wheel: MakeWheel
) -> None:
    wheel = make_wheel("not-a-connector", "1.0", {"helper": "main"})
    with pytest.raises(InstallError, match=r"does not provide one source-\*/destination-\* script"):
        install_connector(str(wheel))
    assert leftovers(ferry_home) == []
    assert list_installed() == []


def test_a_failing_pip_install_says_why_and_leaves_nothing(
    ferry_home: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken_connector-1.0-py3-none-any.whl"
    broken.write_bytes(b"this is not a zip file")
    with pytest.raises(InstallError) as caught:
        install_connector(str(broken))
    message = str(caught.value)
    assert message.startswith(f"pip install {broken} failed (exit code 1):")
    assert "broken_connector-1.0-py3-none-any.whl" in message.split(":", 1)[1], "pip's own lines"
    assert caught.value.exit_code == 2
    assert leftovers(ferry_home) == []


@pytest.mark.slow
def test_install_a_local_project_directory(ferry_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "source-project"
    (project / "source_project").mkdir(parents=True)
    (project / "source_project" / "__init__.py").write_text(TINY_MODULE)
    (project / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['setuptools>=61']\nbuild-backend = 'setuptools.build_meta'\n"
        "[project]\nname = 'source-project'\nversion = '0.3.0'\n"
        "[project.scripts]\nsource-project = 'source_project:main'\n"
        "[tool.setuptools]\npackages = ['source_project']\n"
    )
    installed = install_connector(str(project))
    assert (installed.name, installed.version) == ("source-project", "0.3.0")
    output = subprocess.run(
        [str(installed.executable_path), "spec"], capture_output=True, check=True
    )
    assert b'"SPEC"' in output.stdout


@pytest.mark.slow
def test_source_faker_from_pypi(
    installed_faker_home: Path, source_faker: str, ferry_home: Path
) -> None:
    # installed_faker_home ran `ferry connectors install source-faker==VERSION` (once, cached).
    installed = find_installed(source_faker)
    assert installed is not None
    assert (installed.package, installed.version) == ("airbyte-source-faker", "7.2.1")
    manifest = json.loads(
        (installed_faker_home / "connectors" / "source-faker" / MANIFEST).read_text()
    )
    assert manifest["executable"] == "bin/source-faker"
    ref = resolve_reference("source-faker")
    assert ref.target == str(ferry_home / "connectors" / "source-faker" / "bin" / "source-faker")
    output = subprocess.run([ref.target, "spec"], capture_output=True, text=True, check=True)
    assert "Faker Source Spec" in output.stdout
