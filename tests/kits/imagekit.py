"""Helpers for the image builder's tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build_images.py"


def engine_missing(reason: str) -> None:
    """Skip, or fail when engines are required (as tests/conftest.py does)."""
    if os.environ.get("FERRY_REQUIRE_ENGINES") == "1":
        pytest.fail(f"engine required but unavailable: {reason}")
    pytest.skip(reason)


def run_build(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run scripts/build_images.py and fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"build_images.py {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result
