"""Connectors installed from PyPI (or a local path) into their own venv under $FERRY_HOME.

Layout: `$FERRY_HOME/connectors/<name>/` is a venv plus `ferry-connector.json` (name, package,
version, executable relative to the venv). An install is built in a hidden temp dir next to it
and renamed into place only once pip succeeded, so a failed install leaves nothing behind.
Paths in the manifest are relative, so a connector dir can be symlinked (the tests do).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ferry.errors import InstallError
from ferry.home import ferry_home

MANIFEST = "ferry-connector.json"
CONNECTOR_PREFIXES = ("source-", "destination-")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PIP_TAIL_LINES = 15


def connectors_dir() -> Path:
    return ferry_home() / "connectors"


@dataclass(frozen=True)
class InstalledConnector:
    name: str
    package: str
    version: str
    path: Path  # the connector's venv
    executable: str  # relative to path, e.g. bin/source-faker

    @property
    def executable_path(self) -> Path:
        return self.path / self.executable

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "executable": str(self.executable_path),
        }


@dataclass(frozen=True)
class InstallTarget:
    """What to pass to pip and the connector name, when known before installing."""

    requirement: str
    name: str | None


def parse_install_target(text: str) -> InstallTarget:
    """`source-faker` → airbyte-source-faker; `source-faker==7.2.1`; a dir or a wheel path."""
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or text.endswith(".whl"):
        return _local_target(path)
    package, separator, version = text.partition("==")
    package = package.strip()
    if not _NAME.match(package) or (separator and not version.strip()):
        raise InstallError(f"{text!r} is not a connector name, NAME==VERSION or a path")
    name = _connector_name(package)
    if package.startswith(CONNECTOR_PREFIXES):
        package = f"airbyte-{package}"
    return InstallTarget(f"{package}{separator}{version.strip()}", name)


def _local_target(path: Path) -> InstallTarget:
    if not path.exists():
        raise InstallError(f"{path} does not exist")
    if path.is_dir() and not any((path / f).exists() for f in ("pyproject.toml", "setup.py")):
        raise InstallError(f"{path} is a directory without pyproject.toml or setup.py")
    if path.is_file() and path.suffix != ".whl":
        raise InstallError(f"{path} is neither a project directory nor a wheel (.whl)")
    return InstallTarget(str(path.resolve()), None)


def _connector_name(package: str) -> str | None:
    """airbyte-source-x → source-x; source-x → source-x; anything else: decided by its scripts."""
    normal = package.lower().replace("_", "-")
    normal = normal.removeprefix("airbyte-")
    return normal if normal.startswith(CONNECTOR_PREFIXES) else None


def install_connector(text: str, *, name: str | None = None) -> InstalledConnector:
    """Install (or replace) a connector; on failure nothing is left and InstallError says why."""
    target = parse_install_target(text)
    if name is not None and not _NAME.match(name):
        raise InstallError(f"{name!r} is not a valid connector name")
    root = connectors_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=root))
    try:
        installed = _build(staging, target, name or target.name)
        return _move_into_place(installed, root / installed.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(staging: Path, target: InstallTarget, name: str | None) -> InstalledConnector:
    venv = staging / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    report = staging / "pip-report.json"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    _run([*pip, "--report", str(report), target.requirement], f"pip install {target.requirement}")
    package, version = _requested_distribution(report, venv)
    scripts = _console_scripts(venv, package)
    chosen = name or _connector_name(package)
    script = _pick_script(scripts, chosen, package)
    connector = InstalledConnector(chosen or script, package, version, venv, f"bin/{script}")
    (venv / MANIFEST).write_text(json.dumps(_manifest(connector), indent=2) + "\n")
    return connector


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        tail = "\n".join(lines[-PIP_TAIL_LINES:])
        raise InstallError(f"{what} failed (exit code {result.returncode}):\n{tail}")


def _requested_distribution(report: Path, venv: Path) -> tuple[str, str]:
    """The distribution the user asked for, with its version from the venv's own metadata."""
    try:
        items = json.loads(report.read_text())["install"]
        requested = next(item for item in items if item.get("requested"))
        package = str(requested["metadata"]["name"])
    except (OSError, ValueError, KeyError, StopIteration) as error:
        raise InstallError(f"cannot read pip's install report: {error}") from None
    return package, _distribution(venv, package).version


def _distribution(venv: Path, package: str) -> metadata.Distribution:
    site_packages = [str(p) for p in venv.glob("lib/python*/site-packages")]
    wanted = _normalise(package)
    for dist in metadata.distributions(path=site_packages):
        if _normalise(dist.metadata["Name"] or "") == wanted:
            return dist
    raise InstallError(f"pip reported installing {package} but it is not in the venv")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _console_scripts(venv: Path, package: str) -> list[str]:
    entry_points = _distribution(venv, package).entry_points
    return sorted(ep.name for ep in entry_points if ep.group == "console_scripts")


def _pick_script(scripts: list[str], name: str | None, package: str) -> str:
    """The script named like the connector, else the single source-*/destination-* script."""
    if name is not None and name in scripts:
        return name
    candidates = [s for s in scripts if s.startswith(CONNECTOR_PREFIXES)]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(scripts) or "none"
    wanted = f"a script named {name}" if name else "one source-*/destination-* script"
    raise InstallError(
        f"{package} installed, but it does not provide {wanted} (console scripts: {found});"
        " pass --name to choose one"
    )


def _manifest(connector: InstalledConnector) -> dict[str, str]:
    return {
        "name": connector.name,
        "package": connector.package,
        "version": connector.version,
        "executable": connector.executable,
    }


def _move_into_place(built: InstalledConnector, final: Path) -> InstalledConnector:
    """Rename the venv to its final place (replacing an older install) and fix its shebangs."""
    old = final.with_name(f".replaced-{final.name}-{os.getpid()}")
    if final.exists() or final.is_symlink():
        final.rename(old)
    try:
        built.path.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    _remove(old)
    _rewrite_shebangs(final / "bin", old_prefix=str(built.path), new_prefix=str(final))
    return InstalledConnector(built.name, built.package, built.version, final, built.executable)


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _rewrite_shebangs(bin_dir: Path, *, old_prefix: str, new_prefix: str) -> None:
    """pip wrote `#!<staging>/bin/python3.11` into each script (and venv into `activate*`):
    point them at the final venv. Only text scripts are touched, never binaries."""
    old, new = old_prefix.encode(), new_prefix.encode()
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with script.open("rb") as handle:
            is_text_script = handle.read(2) == b"#!" or script.name.startswith("activate")
        if is_text_script:
            data = script.read_bytes()
            if old in data:
                script.write_bytes(data.replace(old, new))


def load_manifest(directory: Path) -> InstalledConnector | None:
    """The connector installed in `directory`, or None when it holds no valid manifest."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        return InstalledConnector(
            name=str(manifest["name"]),
            package=str(manifest["package"]),
            version=str(manifest["version"]),
            path=directory,
            executable=str(manifest["executable"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_installed(name: str) -> InstalledConnector | None:
    if not _NAME.match(name):
        return None
    return load_manifest(connectors_dir() / name)


def list_installed() -> list[InstalledConnector]:
    root = connectors_dir()
    if not root.is_dir():
        return []
    found = (load_manifest(d) for d in sorted(root.iterdir()) if not d.name.startswith("."))
    return [connector for connector in found if connector is not None]
