"""Fixtures shared by every test module.

Engine-backed tests (Docker, Podman) skip with a reason on a machine without the engine, but
FAIL when FERRY_REQUIRE_ENGINES=1 (the README's test command sets it), so CI never passes by
skipping. Real-cluster tests skip unless KUBECONFIG is set. A test that asks for an engine (any
fixture built on `docker_available` / `podman_available`) is marked `docker` / `podman` here, so
`pytest -m "not docker and not podman"` runs exactly the engine-free suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE_MARKERS = {"docker_available": "docker", "podman_available": "podman"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, marker in ENGINE_MARKERS.items():
            if fixture in fixtures:
                item.add_marker(marker)


def engine_missing(reason: str) -> None:
    """Skip, or fail when engines are required (CI)."""
    if os.environ.get("FERRY_REQUIRE_ENGINES") == "1":
        pytest.fail(f"engine required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def ferry_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own FERRY_HOME (installed connectors are shared via a cache fixture)."""
    home = tmp_path_factory.mktemp("ferry-home")
    monkeypatch.setenv("FERRY_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


@pytest.fixture
def docker_engine(docker_available: bool) -> None:
    """Use in every test that needs a running Docker engine."""
    if not docker_available:
        engine_missing("no running Docker engine (`docker info` failed); run scripts/engines.sh")


@pytest.fixture(scope="session")
def podman_available() -> bool:
    if shutil.which("podman") is None:
        return False
    result = subprocess.run(["podman", "info"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


@pytest.fixture
def podman_engine(podman_available: bool) -> None:
    """Use in every test that needs podman."""
    if not podman_available:
        engine_missing("podman is not usable (`podman info` failed); run scripts/engines.sh")


# --- installed connectors (source-faker from PyPI) ---------------------------------------------

FAKER_VERSION = "7.2.1"
# Bump when the layout `ferry connectors install` produces changes, so stale caches are rebuilt.
INSTALL_LAYOUT = 1
TEST_CACHE = Path(os.environ.get("FERRY_TEST_CACHE") or Path.home() / ".cache" / "ferry-tests")
SHELL_CONNECTORS = REPO / "tests" / "connectors_sh"


@pytest.fixture(scope="session")
def installed_faker_home() -> Path:
    """A FERRY_HOME holding source-faker, installed with `ferry connectors install` once per
    machine and version (under ~/.cache/ferry-tests, or $FERRY_TEST_CACHE) and then reused."""
    import fcntl
    import sys

    from ferry.runtimes.local.install import load_manifest

    home = TEST_CACHE / f"source-faker-{FAKER_VERSION}-layout{INSTALL_LAYOUT}"
    connector = home / "connectors" / "source-faker"
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with (TEST_CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs install it once
        manifest = load_manifest(connector)
        if manifest is None or manifest.version != FAKER_VERSION:
            shutil.rmtree(home, ignore_errors=True)
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ferry",
                    "connectors",
                    "install",
                    f"source-faker=={FAKER_VERSION}",
                ],
                env={**os.environ, "FERRY_HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if result.returncode != 0:
                pytest.fail(f"installing source-faker failed:\n{result.stdout}\n{result.stderr}")
    return home


@pytest.fixture
def source_faker(installed_faker_home: Path, ferry_home: Path) -> str:
    """Makes the cached source-faker an installed connector of this test's FERRY_HOME."""
    connectors = ferry_home / "connectors"
    connectors.mkdir(parents=True, exist_ok=True)
    (connectors / "source-faker").symlink_to(installed_faker_home / "connectors" / "source-faker")
    return "source-faker"


@pytest.fixture
def connectors_sh() -> Path:
    """The directory of the test connectors written in sh (tests/connectors_sh)."""
    return SHELL_CONNECTORS


TINY_CONNECTOR_MODULE = """
import json

def main():
    spec = {"connectionSpecification": {"type": "object"}}
    print(json.dumps({"type": "SPEC", "spec": spec}))
"""


@pytest.fixture
def make_wheel(tmp_path_factory: pytest.TempPathFactory) -> object:
    """`make_wheel(package, version, {script: "main"})` → a minimal pure-Python wheel whose
    console scripts print a SPEC; it installs without a build backend or a package index."""
    import base64
    import hashlib
    import zipfile

    def digest(text: str) -> str:
        raw = hashlib.sha256(text.encode()).digest()
        return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def build(package: str, version: str, scripts: dict[str, str]) -> Path:
        dist = package.replace("-", "_")
        info = f"{dist}-{version}.dist-info"
        files = {
            f"{dist}_module/__init__.py": TINY_CONNECTOR_MODULE,
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: ferry-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n",
            f"{info}/entry_points.txt": "[console_scripts]\n"
            + "".join(f"{name} = {dist}_module:{func}\n" for name, func in scripts.items()),
        }
        record = "".join(
            f"{name},{digest(text)},{len(text.encode())}\n" for name, text in files.items()
        )
        files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
        wheel = tmp_path_factory.mktemp("wheel") / f"{dist}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, text in files.items():
                archive.writestr(name, text)
        return wheel

    return build
