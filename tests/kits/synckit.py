"""What the engine's end-to-end tests share: connection files and `python -m ferry` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parents[1] / "engine" / "data"
SCRIPTED = str(DATA / "scripted_source.py")


def write_connection(tmp_path: Path, name: str = "test-connection", **fields: Any) -> Path:
    path = tmp_path / "connection.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}))
    return path


def ferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sync_json(connection: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Exit code, the `--json` summary ({} if none) and stderr of one `ferry sync`."""
    result = ferry("sync", str(connection), "--json", *extra)
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, summary, result.stderr
