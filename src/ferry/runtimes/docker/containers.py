"""What a Docker container of a connector is made of, derived without I/O.

The `create_container` arguments of an invocation (`container_spec`), the `resources:` limits in
the engine's units, `volumes:` binds, and the archive of config files uploaded into a created
container (owned by the image's USER, so a connector running as that user can read them).
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shlex
import tarfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.errors import ConfigError, ConnectorNotFound
from ferry.runtimes.base import ConnectorInvocation, ConnectorOptions, protocol_args
from ferry.runtimes.owner import owner_labels
from ferry.runtimes.quantity import cpu_amount, memory_bytes

FILES_DIR = "/ferry"

# The engine refuses a smaller memory limit.
DOCKER_MIN_MEMORY = 6 << 20


def parse_memory(value: str) -> int:
    """Bytes for `mem_limit` (see ferry.runtimes.quantity), at least Docker's minimum."""
    size = memory_bytes(value, "resources.memory")
    if size < DOCKER_MIN_MEMORY:
        raise ConfigError(f"resources.memory: {value!r} is below Docker's minimum of 6 MiB")
    return size


def parse_cpu(value: str) -> int:
    """Nano-CPUs of `0.5`, `2`, or Kubernetes millicores `500m`."""
    return max(1, round(cpu_amount(value, "resources.cpu") * 10**9))


def standard_host_config(**extra: Any) -> dict[str, Any]:
    """What every container ferry starts has, plus `extra`: removed once it exits, no log
    driver (records never land in the engine's json log files), and the engine's tiny init as
    PID 1, which forwards `docker stop`'s SIGTERM to the connector (a PID 1 without a handler
    ignores it) and reaps zombies."""
    return {
        "auto_remove": True,
        "log_config": {"type": "none", "config": {}},
        "init": True,
        **extra,
    }


def options_host_config(options: ConnectorOptions) -> dict[str, Any]:
    """The host config of a connector's `resources:` and `volumes:` options."""
    limits: dict[str, Any] = {}
    if options.memory:
        limits["mem_limit"] = parse_memory(options.memory)
    if options.cpu:
        limits["nano_cpus"] = parse_cpu(options.cpu)
    if options.volumes:
        limits["binds"] = volume_binds(options.volumes)
    return limits


def container_name(invocation: ConnectorInvocation) -> str:
    labels = invocation.labels
    base = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{labels.connection}-{labels.role}").strip("-.")
    return f"ferry-{base[:60]}-{invocation.verb}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `create_container` needs, derived from an invocation without I/O."""

    image: str
    name: str
    command: list[str]
    entrypoint: list[str] | None
    environment: dict[str, str]
    labels: dict[str, str]
    host_config: dict[str, Any]
    stdin: bool


def container_spec(
    invocation: ConnectorInvocation, entrypoint: list[str] | None, paths: Mapping[str, str]
) -> ContainerSpec:
    ref = invocation.connector
    options = ref.options
    network = {"network_mode": options.network} if options.network else {}
    return ContainerSpec(
        image=ref.target,
        name=container_name(invocation),
        command=[*ref.args, *protocol_args(invocation.verb, paths)],
        entrypoint=entrypoint,
        environment=invocation.environment,
        labels={**invocation.labels.as_labels(), **owner_labels()},
        host_config=standard_host_config(**options_host_config(options), **network),
        stdin=invocation.reads_stdin,
    )


def volume_binds(volumes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    binds: dict[str, dict[str, str]] = {}
    for host, container in volumes.items():
        if not posixpath.isabs(container):
            raise ConfigError(f"volume target {container!r} must be an absolute container path")
        # Relative host paths are ferry's working directory (the engine needs absolute ones).
        binds[os.path.abspath(os.path.expanduser(host))] = {"bind": container, "mode": "rw"}
    return binds


def resolve_entrypoint(
    image: str, config: Mapping[str, Any], options: ConnectorOptions
) -> list[str] | None:
    """None to run the image's own ENTRYPOINT, else the entrypoint to set.

    An explicit `entrypoint:` command line wins; an image without ENTRYPOINT falls back to its
    AIRBYTE_ENTRYPOINT; an image with neither cannot be run as a connector.
    """
    if options.entrypoint and options.entrypoint != "auto":
        return shlex.split(options.entrypoint)
    if config.get("Entrypoint"):
        return None
    for item in config.get("Env") or []:
        name, _, value = str(item).partition("=")
        if name == "AIRBYTE_ENTRYPOINT" and value.strip():
            return shlex.split(value)
    raise ConnectorNotFound(
        f"image {image} has neither an ENTRYPOINT nor an AIRBYTE_ENTRYPOINT variable, so ferry "
        "does not know which program is the connector; set `entrypoint: <command>` in the "
        "connector's block, or use an image with an ENTRYPOINT"
    )


def files_archive(files: Mapping[str, bytes], uid: int, gid: int) -> tuple[bytes, dict[str, str]]:
    """A tar of /ferry/NAME.json (0600, directory 0700, owned by uid:gid) and the paths."""
    buffer = io.BytesIO()
    paths: dict[str, str] = {}
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(FILES_DIR.lstrip("/"))
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o700
        directory.uid, directory.gid = uid, gid
        directory.mtime = now
        tar.addfile(directory)
        for name, data in files.items():
            path = f"{FILES_DIR}/{name}.json"
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o600
            info.uid, info.gid = uid, gid
            info.mtime = now
            tar.addfile(info, io.BytesIO(data))
            paths[name] = path
    return buffer.getvalue(), paths


def parse_user(user: str) -> tuple[str, str]:
    """`user[:group]` of an image's USER (either may be a name or a number)."""
    name, _, group = user.partition(":")
    return name.strip(), group.strip()


def lookup_ids(user: str, passwd: str, group_file: str) -> tuple[int, int] | None:
    """uid and gid an image's USER runs as, from its /etc/passwd and /etc/group; None if unknown."""
    name, group = parse_user(user)
    uid: int | None = int(name) if name.isdigit() else None
    gid: int | None = None
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        if (uid is None and fields[0] == name) or (uid is not None and int(fields[2]) == uid):
            uid, gid = int(fields[2]), int(fields[3])
            break
    if uid is None:
        return None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for line in group_file.splitlines():
                fields = line.split(":")
                if len(fields) >= 3 and fields[0] == group and fields[2].isdigit():
                    gid = int(fields[2])
                    break
            else:
                return None
    return uid, gid if gid is not None else 0
