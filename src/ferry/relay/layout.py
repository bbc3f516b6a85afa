"""The shared directory between the wrapper and its sidecars, and the rule for generated commands.

The wrapper (the connector container's command) and the sidecars (relays, heartbeat) share one
directory, by default `/ferry/io` (an emptyDir in a pod, a volume in Docker relay mode):

    stdin       FIFO, only when the connector reads stdin (the stdin relay writes it)
    stdout      FIFO, the connector's stdout (the stdout relay reads it)
    stderr      FIFO, the connector's stderr (the stderr relay reads it)
    exit        the connector's exit code and a newline, written by the wrapper when the connector
                is gone (via a temp file + mv, so a reader never sees half of it)
    terminate   the termination marker: written by the heartbeat sidecar when ferry is gone (or by
                the wrapper's own SIGTERM trap); its first line is the reason. The wrapper then
                TERMs the connector's process tree and KILLs it after a grace period.
    heartbeat.err  scratch file of the heartbeat sidecar (the last probe's error)

The directory must be writable by every container's user (an emptyDir is 0777); FIFOs are created
with mode 666 by whichever side gets there first.

Everything ferry puts into a command, its arguments or an environment value of a container must
contain neither `$(` nor `$$`: Kubernetes expands `$(VAR)` and turns `$$` into `$` there, Podman
4.3 does neither, so only text without both behaves the same on every runtime.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ferry.errors import ConfigError

IO_DIR = "/ferry/io"
STDIN = "stdin"
STDOUT = "stdout"
STDERR = "stderr"
EXIT_FILE = "exit"
TERMINATE_FILE = "terminate"
HEARTBEAT_ERR_FILE = "heartbeat.err"

# Exit code the wrapper reports when it stopped the connector on request and the connector itself
# exited 0 (or never started): 128 + SIGTERM, like a shell.
TERMINATED_EXIT_CODE = 143
# Exit code when no entrypoint is known (AIRBYTE_ENTRYPOINT unset and no override).
NO_ENTRYPOINT_EXIT_CODE = 127


def io_path(name: str, io_dir: str = IO_DIR) -> str:
    """The path of a file of the shared directory, as seen inside the containers."""
    return f"{io_dir.rstrip('/')}/{name}"


def parse_exit_code(text: str) -> int | None:
    """The code in an exit file's text, or None if it is empty or not a number (being written)."""
    text = text.strip()
    if not text.isdigit():
        return None
    return int(text)


def read_exit_file(path: str | Path) -> int | None:
    """The exit code the wrapper wrote at `path`, or None if there is none (yet).

    For a runtime that can see the shared directory (a host bind mount); runtimes that cannot use
    the exit code the heartbeat sidecar reports over the relay (`RelayRegistration.wait_exit`).
    """
    try:
        return parse_exit_code(Path(path).read_text(encoding="ascii", errors="replace"))
    except FileNotFoundError:
        return None


def unsafe_for_kubernetes(text: str) -> bool:
    """True if `text` holds `$(` or `$$`, which Kubernetes would rewrite and Podman would not."""
    return "$(" in text or "$$" in text


def check_portable(strings: Iterable[str], what: str) -> None:
    """Raise ConfigError naming the first string that Kubernetes and Podman would treat differently."""
    for text in strings:
        if unsafe_for_kubernetes(text):
            raise ConfigError(
                f"{what} must contain neither '$(' nor '$$' (Kubernetes rewrites them and Podman "
                f"does not): {text!r}"
            )
