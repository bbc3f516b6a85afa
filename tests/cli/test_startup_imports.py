"""A local sync loads nothing of the container runtimes: no Kubernetes client, no HTTP client.

Their imports cost ~50 ms on every command (lightkube brings its HTTP client); they are loaded
through the runtime registry when a pod or Docker runtime is used. Each check runs in a fresh
interpreter, since this test process may have loaded them for other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONTAINER_CLIENTS = ("lightkube", "httpx", "httpx2", "docker", "ferry.runtimes.pods.manifests")

PROBE = """
import json, sys
{before}
print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))
"""


def loaded_after(code: str) -> list[str]:
    """The container-client modules present in a new interpreter once `code` has run."""
    probe = PROBE.format(before=code, names=CONTAINER_CLIENTS)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_loads_no_container_client() -> None:
    assert loaded_after("import ferry.cli.main") == []


def test_a_local_sync_loads_no_container_client(tmp_path: Path) -> None:
    connection = tmp_path / "tiny.yaml"
    connection.write_text(
        "name: tiny\n"
        "source: {connector: source-generator, config: {count: 2}}\n"
        f"destination: {{connector: destination-duckdb, config: {{path: {tmp_path / 't.duckdb'}}}}}\n"
    )
    sync = (
        "import contextlib, io\n"
        "from ferry.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['sync', {str(connection)!r}, '--json']) == 0\n"
    )
    assert loaded_after(sync) == []


def test_a_pod_runtime_loads_them_when_used() -> None:
    """The probe sees a pod runtime's modules: the checks above can fail."""
    code = "from ferry.runtimes import get_runtime\nget_runtime('kubernetes')"
    assert {"lightkube", "ferry.runtimes.pods.manifests"} <= set(loaded_after(code))
