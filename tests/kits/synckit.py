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


ROTATING = DATA / "rotating_source.py"
RECORDING = str(DATA / "recording_destination.py")
PLATFORM_ENV = (
    "WORKER_JOB_ID",
    "WORKER_JOB_ATTEMPT",
    "USE_STREAM_CAPABLE_STATE",
    "DATA_CHANNEL_MEDIUM",
    "DATA_CHANNEL_FORMAT",
)


def rotating_source(
    shared: Path, *, image: str | None = None, count: int = 5, **options: Any
) -> dict[str, Any]:
    """A connection file's block for tests/engine/data/rotating_source.py, its issued token
    (`tok-0` to begin with) in `shared`. With `image` (`docker:IMAGE`, `podman:IMAGE`), it
    runs in that Python image, `shared`
    mounted at /rot with the script in it; `options` are more connector-block keys."""
    shared.mkdir(exist_ok=True)
    shared.chmod(0o777)  # whatever user the container runs as writes the token there
    (shared / "token").write_text("tok-0")
    where, connector = str(shared), str(ROTATING)
    if image is not None:
        (shared / ROTATING.name).write_bytes(ROTATING.read_bytes())
        where, connector = "/rot", image
        options = {"entrypoint": f"python3 /rot/{ROTATING.name}", **options}
        options["volumes"] = {str(shared): "/rot"}
    config = {
        "refresh_token": "tok-0",
        "token_file": f"{where}/token",
        "crash_flag": f"{where}/crash",
        "env_dump": where,
        "count": count,
    }
    return {"connector": connector, "config": config, **options}


def issued_token(shared: Path) -> str:
    return (shared / "token").read_text()


def dumped_env(shared: Path, verb: str) -> dict[str, str]:
    """The environment the rotating source's `verb` command last ran with."""
    env: dict[str, str] = json.loads((shared / f"{verb}.json").read_text())
    return env
