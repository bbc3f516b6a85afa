"""Running the `ferry` command: in-process through `main` (fast) or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import Ferry, Result, WriteConfig

from ferry.cli.main import main
from ferry.engine.secrets import masker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ferry(capsys: pytest.CaptureFixture[str]) -> Ferry:
    """`ferry("check", X, "--config", F)` runs `main` in this process; returns code and output."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def ferry_process() -> Ferry:
    """Runs `python -m ferry ...` as a separate process (environment inherited)."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Result:
        result = subprocess.run(
            [sys.executable, "-m", "ferry", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            timeout=600,
            check=False,
        )
        return Result(result.returncode, result.stdout, result.stderr)

    return run


@pytest.fixture
def protocol_sh(connectors_sh: Path) -> str:
    return str(connectors_sh / "protocol.sh")


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Writes a config file (JSON or YAML text) and returns its path."""
    count = 0

    def write(text: str, suffix: str = ".json") -> str:
        nonlocal count
        count += 1
        path = tmp_path / f"config-{count}{suffix}"
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    """The masker is process-wide: secrets of one test must not mask another's output."""
    yield
    masker.clear()
