"""The wrapper: one POSIX sh script that runs a connector with its stdio on FIFOs, for every runtime.

A runtime passes `wrapper_command(...).argv` as the connector container's command (with `.env`
merged into its environment). The script text is constant (`wrapper.sh` next to this module); the
protocol arguments follow it as positional parameters and reach the connector as "$@" inside the
eval'd entrypoint, so paths with spaces, `$`, quotes or backslashes arrive intact, one per
argument, and nothing is quoted twice. Settings travel in `FERRY_*` environment variables.

What the script does (see wrapper.sh for the details):
- takes the entrypoint from FERRY_ENTRYPOINT_OVERRIDE (%-encoded, see `encode_entrypoint`) or
  AIRBYTE_ENTRYPOINT; with neither it writes an actionable message (to its stderr and to the
  stderr FIFO, so it reaches ferry's log) and exits 127;
- opens stdin (only when FERRY_STDIN=1, else /dev/null), stdout and stderr FIFOs in the shared
  directory (each open waits for its relay sidecar, so no byte is written before a reader exists)
  and evals `<entrypoint> "$@"` in a background subshell;
- waits for it, writes its exit code to `exit` in that directory and exits with it;
- watches the termination marker `terminate` (the heartbeat sidecar writes it when ferry is gone);
  then TERMs the processes the connector runs, waits up to the grace period for all of them to be
  gone (not just the direct child), KILLs what is left, logs why and exits non-zero (143 when the
  connector itself exited 0). It traps SIGTERM/SIGINT/SIGHUP, which
  it turns into the same marker, so it also works as a container's PID 1.

No `$(` and no `$$` appear in the script, its arguments or the environment values ferry sets:
Kubernetes rewrites both in command, args and env, Podman 4.3 does not.
"""

from __future__ import annotations

import functools
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from ferry.errors import InternalError
from ferry.relay.layout import IO_DIR, check_portable, unsafe_for_kubernetes

WRAPPER_NAME = "ferry-wrapper"
DEFAULT_SHELL: tuple[str, ...] = ("/bin/sh",)
DEFAULT_GRACE = 10.0

ENV_AIRBYTE_ENTRYPOINT = "AIRBYTE_ENTRYPOINT"
ENV_ENTRYPOINT_OVERRIDE = "FERRY_ENTRYPOINT_OVERRIDE"
ENV_IMAGE = "FERRY_IMAGE"
ENV_IO_DIR = "FERRY_IO_DIR"
ENV_STDIN = "FERRY_STDIN"
ENV_GRACE = "FERRY_GRACE"
ENV_POLL = "FERRY_POLL"
ENV_GRACE_TICKS = "FERRY_GRACE_TICKS"


def load_script(name: str) -> str:
    """A script of this package with its comment-only and blank lines removed.

    The comments document the templates; dropping them keeps pod specs short. The templates have
    no here-documents or multi-line strings, so removing such lines never changes their meaning.
    """
    text = resources.files("ferry.relay").joinpath(name).read_text(encoding="utf-8")
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    script = "\n".join(lines) + "\n"
    if unsafe_for_kubernetes(script):  # pragma: no cover - guarded by the tests
        raise InternalError(f"{name} contains '$(' or '$$'")
    return script


@functools.cache
def wrapper_script() -> str:
    """The wrapper's script text (the same for every runtime)."""
    return load_script("wrapper.sh")


def encode_entrypoint(command: str) -> str:
    """%-encode an entrypoint override: `%` -> `%25`, `$` -> `%24` (the wrapper decodes it).

    The override travels in an environment variable, which Kubernetes would rewrite if it held
    `$(` or `$$`; encoded, it holds no `$` at all and the wrapper evals exactly `command`.
    """
    return command.replace("%", "%25").replace("$", "%24")


def entrypoint_from_argv(argv: Sequence[str]) -> str:
    """The shell command line that runs `argv` (e.g. an image's ENTRYPOINT for `entrypoint: auto`)."""
    return shlex.join(argv)


def derive_entrypoint(config: Mapping[str, object]) -> str | None:
    """The wrapper's override for `entrypoint: auto` from an image config, as a shell command line;
    the one rule of every runtime (Docker relay, Podman, Kubernetes).

    None when the image sets AIRBYTE_ENTRYPOINT (the wrapper uses it) or has neither ENTRYPOINT
    nor CMD. Otherwise what `docker run IMAGE ARGS...` (or a pod with only `args`) runs: the
    ENTRYPOINT, whose CMD the protocol arguments replace, or without one the CMD, to which the
    wrapper appends them. ENTRYPOINT+CMD would hand a connector its default arguments (often
    `--help`) before the protocol's.
    """
    for item in _strings(config.get("Env")):
        name, _, value = str(item).partition("=")
        if name == "AIRBYTE_ENTRYPOINT" and value.strip():
            return None
    argv = _strings(config.get("Entrypoint")) or _strings(config.get("Cmd"))
    return entrypoint_from_argv(argv) if argv else None


def _strings(value: object) -> list[str]:
    """An image config's list field (Env, Entrypoint, Cmd), which may be null or absent."""
    return [str(item) for item in value] if isinstance(value, list) else []


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class WrapperCommand:
    """The connector container's command and the environment variables it needs."""

    argv: tuple[str, ...]
    env: Mapping[str, str]


def wrapper_command(
    protocol_args: Sequence[str],
    *,
    image: str,
    reads_stdin: bool,
    entrypoint: str | None = None,
    io_dir: str = IO_DIR,
    grace: float = DEFAULT_GRACE,
    poll: float = 1.0,
    shell: Sequence[str] = DEFAULT_SHELL,
) -> WrapperCommand:
    """The wrapper invocation for one connector run.

    `protocol_args` are the connector's arguments (`protocol_args(verb, paths)` of the runtime
    base); `entrypoint` overrides the image's AIRBYTE_ENTRYPOINT (a shell command line, e.g. from
    `entrypoint_from_argv`); `grace` is the time between TERM and KILL when ferry is gone; `poll`
    how often the wrapper looks at the termination marker (and, while stopping, at the
    connector's processes). The runtime merges `env` into the
    container's environment (ferry's values must win over the user's). Raises ConfigError if an
    argument or value holds `$(` or `$$`, which Kubernetes and Podman would treat differently.
    """
    if grace < 0 or poll <= 0:
        raise InternalError("grace must be >= 0 and poll > 0")
    argv = (*shell, "-c", wrapper_script(), WRAPPER_NAME, *protocol_args)
    env = {
        ENV_IMAGE: image,
        ENV_IO_DIR: io_dir,
        ENV_STDIN: "1" if reads_stdin else "0",
        ENV_GRACE: _number(grace),
        ENV_GRACE_TICKS: str(math.ceil(grace / poll)),
        ENV_POLL: _number(poll),
    }
    if entrypoint is not None and entrypoint.strip():
        env[ENV_ENTRYPOINT_OVERRIDE] = encode_entrypoint(entrypoint)
    check_portable(argv, "the wrapper's command and arguments")
    check_portable(env.values(), "the wrapper's environment values")
    return WrapperCommand(argv=argv, env=env)
