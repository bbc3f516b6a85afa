"""Turn a connector reference (`source-faker`, `./my-source`, `docker:IMAGE`) into a ConnectorRef.

An explicit runtime prefix wins. Without one, a container default runtime takes the reference as
an image; the local runtime tries, in order: a connector ferry installed, a first-party console
script next to ferry's own interpreter (works without an activated venv), a command on PATH, a
path to an executable file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ferry.errors import ConfigError, ConnectorNotFound
from ferry.runtimes.base import RUNTIME_NAMES, ConnectorOptions, ConnectorRef
from ferry.runtimes.local.install import find_installed


def resolve_reference(
    reference: str,
    *,
    default_runtime: str = "local",
    options: ConnectorOptions | None = None,
) -> ConnectorRef:
    options = options or ConnectorOptions()
    reference = reference.strip()
    runtime, target = _split_prefix(reference)
    runtime = runtime or default_runtime
    if runtime not in RUNTIME_NAMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_NAMES)}")
    if not target:
        raise ConfigError(f"connector reference {reference!r} names no connector")
    if runtime != "local":
        return ConnectorRef(runtime, target, options=options)
    return _resolve_local(target, options)


def _split_prefix(reference: str) -> tuple[str | None, str]:
    prefix, separator, rest = reference.partition(":")
    if separator and prefix in RUNTIME_NAMES:
        return prefix, rest.strip()
    return None, reference


def _resolve_local(target: str, options: ConnectorOptions) -> ConnectorRef:
    tried: list[str] = []
    is_bare_name = os.sep not in target
    if is_bare_name:
        installed = find_installed(target)
        if installed is not None:
            return ConnectorRef("local", str(installed.executable_path), options=options)
        tried.append("installed connectors")
        beside_ferry = Path(sys.executable).parent / target
        if _is_executable_file(beside_ferry):
            return ConnectorRef("local", str(beside_ferry), options=options)
        tried.append(f"scripts in {beside_ferry.parent}")
        on_path = shutil.which(target)
        if on_path is not None:
            return ConnectorRef("local", str(Path(on_path).absolute()), options=options)
        tried.append("PATH")
    path = Path(target).expanduser()
    if path.exists():
        if not _is_executable_file(path):
            what = "a directory" if path.is_dir() else "not executable (try chmod +x)"
            raise ConnectorNotFound(f"connector {target} is {what}")
        return ConnectorRef("local", str(path.absolute()), options=options)
    if not is_bare_name:
        raise ConnectorNotFound(f"connector {target} does not exist")
    raise ConnectorNotFound(
        f"connector {target!r} not found (tried {', '.join(tried)} and the current directory);"
        f" install it with `ferry connectors install {target}` or give a path to an executable"
    )


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
