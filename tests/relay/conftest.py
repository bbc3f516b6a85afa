"""Fixtures of the wrapper tests: the shells the wrapper must run under, a shared directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from wrapperkit import BUSYBOX, DASH, Shell, make_busybox_path


@pytest.fixture(scope="session")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PATH of a busybox-only userland (plus socat), like the sidecar image."""
    if not os.access(BUSYBOX, os.X_OK):
        pytest.fail("busybox-static is required at /bin/busybox (apt-get install busybox-static)")
    return make_busybox_path(tmp_path_factory.mktemp("busybox-bin"))


@pytest.fixture(scope="session")
def busybox_shell(busybox_path: str) -> Shell:
    return Shell("busybox", (BUSYBOX, "sh"), busybox_path)


@pytest.fixture(params=["busybox", "dash"])
def shell(request: pytest.FixtureRequest, busybox_path: str) -> Shell:
    """The wrapper's shell: busybox ash with only busybox applets, or dash with the host's PATH."""
    if request.param == "busybox":
        return Shell("busybox", (BUSYBOX, "sh"), busybox_path)
    if not os.access(DASH, os.X_OK):
        pytest.fail("dash is required at /usr/bin/dash")
    return Shell("dash", (DASH,), os.environ.get("PATH", "/usr/bin:/bin"))


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    """The shared directory (an emptyDir in a pod)."""
    path = tmp_path / "io dir"  # a space, to prove nothing splits paths
    path.mkdir()
    return path
