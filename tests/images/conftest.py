"""Fixtures for the image builder's tests: build the images once per session (seconds when the
engine already holds images with the current build hash, a few minutes on a fresh machine)."""

from __future__ import annotations

import pytest
from imagekit import engine_missing, run_build


@pytest.fixture(scope="session")
def docker_images(docker_available: bool) -> str:
    """Every image built in Docker; returns the build's output."""
    if not docker_available:
        engine_missing("no running Docker engine (`docker info` failed); run scripts/engines.sh")
    return run_build("--engine", "docker").stdout


@pytest.fixture(scope="session")
def podman_images(podman_available: bool, docker_available: bool) -> str:
    """Every image in podman's storage (copied from Docker when it is there too)."""
    if not podman_available:
        engine_missing("podman is not usable (`podman info` failed); run scripts/engines.sh")
    return run_build("--engine", "both" if docker_available else "podman").stdout
