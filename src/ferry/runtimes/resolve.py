"""Turn a connector reference (`source-faker`, `./my-source`, `docker:IMAGE`) into a ConnectorRef.

An explicit runtime prefix wins. Without one, a container default runtime takes the reference as
an image; the local runtime tries, in order: a connector ferry installed, a first-party console
script next to ferry's own interpreter (works without an activated venv), a command on PATH, a
path to an executable file. The options of the connector block must be ones the chosen runtime
honours (each kind declares its `OPTIONS`): any other option set is an error, not ignored.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from ferry.errors import ConfigError, ConnectorNotFound
from ferry.runtimes import docker, local, pods
from ferry.runtimes.base import RUNTIME_NAMES, ConnectorRef
from ferry.runtimes.local.install import find_installed
from ferry.runtimes.options import ConnectorOptions

# The connector-block options each runtime honours, as its kind declares them.
HONOURED_OPTIONS: Mapping[str, frozenset[str]] = {
    "local": local.OPTIONS,
    "docker": docker.OPTIONS,
    "podman": pods.OPTIONS,
    "kubernetes": pods.OPTIONS,
}
_OPTION_HINTS = {
    "network": "a pod's network is set with kubernetes: {host_network: ...}",
    "resources.memory": "resource limits need a container runtime",
    "resources.cpu": "resource limits need a container runtime",
}


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
    check_options_apply(runtime, options)
    if runtime != "local":
        return ConnectorRef(runtime, target, options=options)
    return _resolve_local(target, options)


def check_options_apply(runtime: str, options: ConnectorOptions) -> None:
    """Raise ConfigError naming every option that is set but that `runtime` would ignore."""
    ignored = [name for name in options.set_options() if name not in HONOURED_OPTIONS[runtime]]
    if not ignored:
        return
    hints = sorted({_OPTION_HINTS[name] for name in ignored if name in _OPTION_HINTS})
    users = [r for r in RUNTIME_NAMES if set(ignored) <= HONOURED_OPTIONS[r]]
    raise ConfigError(
        f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to the "
        f"{runtime} runtime (only to {' and '.join(users) or 'other runtimes'})"
        + "".join(f"; {hint}" for hint in hints)
    )


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
