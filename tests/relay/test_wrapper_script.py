"""The wrapper script under busybox sh and dash, with real FIFOs and fake sh connectors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from wrapperkit import Shell, WrapperRun, wait_for, write_script

from ferry.errors import ConfigError
from ferry.relay import (
    NO_ENTRYPOINT_EXIT_CODE,
    TERMINATED_EXIT_CODE,
    encode_entrypoint,
    entrypoint_from_argv,
    heartbeat_sidecar_command,
    read_exit_file,
    relay_sidecar_command,
    unsafe_for_kubernetes,
    wrapper_command,
    wrapper_script,
)
from ferry.relay.sidecars import RelayEndpoint

pytestmark = pytest.mark.timeout(120)

ARGS_CONNECTOR = """
for a in "$@"; do printf '%s\\036' "$a"; done
"""

WEIRD_ARGS = [
    "spec",
    "--config",
    "/secrets/my config/config.json",
    "$HOME",
    "${PATH}",
    "a'b",
    'say "hi"',
    "back\\slash\\n",
    "",
    "  leading and trailing  ",
    "*",
    "~",
    "semi;colon && true | cat",
    "`echo tick`",
    "line1\nline2",
    "-n",
    "ünïcødé",
    "%24 and %25",
]


def test_script_has_no_kubernetes_expansions() -> None:
    endpoint = RelayEndpoint("127.0.0.1", 1234)
    texts = [
        wrapper_script(),
        *relay_sidecar_command("stdout", token="abc_-1", endpoint=endpoint),
        *heartbeat_sidecar_command(token="abc_-1", endpoint=endpoint),
    ]
    for text in texts:
        assert "$(" not in text
        assert "$$" not in text
    assert not any(line.lstrip().startswith("#") for line in wrapper_script().splitlines())


def test_command_rejects_unportable_text() -> None:
    with pytest.raises(ConfigError, match=r"\$\("):
        wrapper_command(["spec", "$(id)"], image="x", reads_stdin=False)
    with pytest.raises(ConfigError, match=r"\$\$"):
        wrapper_command(["spec"], image="x$$", reads_stdin=False)
    # An override with both is encoded, so it passes.
    command = wrapper_command(["spec"], image="x", reads_stdin=False, entrypoint="echo $$ $(id)")
    assert not unsafe_for_kubernetes(command.env["FERRY_ENTRYPOINT_OVERRIDE"])
    assert command.argv[-2:] == ("ferry-wrapper", "spec")


def test_entrypoint_helpers() -> None:
    assert encode_entrypoint("a$b%c") == "a%24b%25c"
    assert entrypoint_from_argv(["python", "/my app/main.py"]) == "python '/my app/main.py'"


def test_arguments_arrive_intact(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    connector = write_script(tmp_path / "args.sh", ARGS_CONNECTOR)
    run = WrapperRun(shell, io_dir, WEIRD_ARGS, airbyte_entrypoint=shell.run(str(connector)))
    done = run.finish()
    assert done.returncode == 0, done.log
    assert done.stdout.split("\036")[:-1] == WEIRD_ARGS
    assert done.exit_file == "0\n"


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_is_returned_and_written(
    shell: Shell, io_dir: Path, tmp_path: Path, code: int
) -> None:
    connector = write_script(tmp_path / "c.sh", f"echo out; echo err >&2; exit {code}\n")
    done = WrapperRun(
        shell, io_dir, ["check"], airbyte_entrypoint=shell.run(str(connector))
    ).finish()
    assert done.returncode == code
    assert done.stdout == "out\n"
    assert done.stderr == "err\n"
    assert read_exit_file(io_dir / "exit") == code
    assert not (io_dir / "exit.tmp").exists()


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_entrypoint_exits_127_with_instructions(
    shell: Shell, io_dir: Path, value: str | None
) -> None:
    done = WrapperRun(
        shell, io_dir, ["spec"], airbyte_entrypoint=value, image="acme/source-x:1.2"
    ).finish()
    assert done.returncode == NO_ENTRYPOINT_EXIT_CODE
    for text in (done.log, done.stderr):  # the container log and ferry's log (stderr relay)
        assert "AIRBYTE_ENTRYPOINT is not set in image acme/source-x:1.2" in text
        assert "ENV AIRBYTE_ENTRYPOINT" in text
        assert "entrypoint: auto" in text
    assert done.exit_file == "127\n"


def test_override_wins_and_keeps_dollars_and_percents(
    shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    connector = write_script(tmp_path / "env.sh", 'printf "%s|%s|" "$X" "$1"\n')
    run = WrapperRun(
        shell,
        io_dir,
        ["spec"],
        entrypoint=f"X='va$l%ue \"q\"' {shell.run(str(connector))}",
        airbyte_entrypoint="false",
    )
    done = run.finish()
    assert done.returncode == 0, done.log
    assert done.stdout == 'va$l%ue "q"|spec|'


def test_malformed_override_is_reported(shell: Shell, io_dir: Path) -> None:
    done = WrapperRun(
        shell, io_dir, ["spec"], extra_env={"FERRY_ENTRYPOINT_OVERRIDE": "echo %zz"}
    ).finish()
    assert done.returncode == NO_ENTRYPOINT_EXIT_CODE
    assert "FERRY_ENTRYPOINT_OVERRIDE is not %-encoded" in done.log


CAT = "exec cat  # ignores its arguments\n"


def test_stdin_is_relayed_and_eof_delivered(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    data = b"".join(b'{"type":"RECORD","n":%d}\n' % i for i in range(20000))
    cat = write_script(tmp_path / "cat.sh", CAT)
    run = WrapperRun(
        shell, io_dir, ["write"], airbyte_entrypoint=shell.run(str(cat)), reads_stdin=True
    )
    writer = run.feed(data)
    done = run.finish()
    writer.join()
    assert done.returncode == 0, done.log
    assert done.stdout.encode() == data


def test_stdin_is_dev_null_when_not_read(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    cat = write_script(tmp_path / "cat.sh", CAT)
    done = WrapperRun(shell, io_dir, ["read"], airbyte_entrypoint=shell.run(str(cat))).finish()
    assert done.returncode == 0
    assert done.stdout == ""
    assert not (io_dir / "stdin").exists()


def test_connector_that_never_reads_stdin(shell: Shell, io_dir: Path) -> None:
    run = WrapperRun(shell, io_dir, ["write"], airbyte_entrypoint="true", reads_stdin=True)
    writer = run.feed(b"x" * (4 << 20))  # more than a pipe holds: the writer must not hang
    done = run.finish()
    writer.join()
    assert done.returncode == 0
    assert isinstance(writer.error, BrokenPipeError)


def test_connector_closing_stdout_early(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    connector = write_script(tmp_path / "c.sh", "echo bye; exec >&-; echo still-here >&2; exit 5\n")
    done = WrapperRun(
        shell, io_dir, ["read"], airbyte_entrypoint=shell.run(str(connector))
    ).finish()
    assert done.returncode == 5
    assert done.stdout == "bye\n"
    assert done.stderr == "still-here\n"


TERM_HANDLER = """
trap 'echo got-term; exit 0' TERM
echo ready
while :; do sleep 0.05; done
"""


def test_marker_terms_the_connector(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    connector = write_script(tmp_path / "c.sh", TERM_HANDLER)
    run = WrapperRun(shell, io_dir, ["read"], airbyte_entrypoint=shell.run(str(connector)))
    run.wait_stdout("ready")
    run.mark("ferry is unreachable (test)")
    done = run.finish()
    assert done.stdout == "ready\ngot-term\n"
    # The connector exited 0 on TERM, but the run was stopped: the wrapper says so.
    assert done.returncode == TERMINATED_EXIT_CODE
    assert done.exit_file == "143\n"
    assert "termination requested (ferry is unreachable (test))" in done.log
    assert "stopped the connector (ferry is unreachable (test)); exit code 143" in done.log
    assert "KILL" not in done.log


IGNORES_TERM = """
trap '' TERM
echo ready
while :; do sleep 0.05; done
"""


def test_marker_kills_a_connector_ignoring_term(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    connector = write_script(tmp_path / "c.sh", IGNORES_TERM)
    run = WrapperRun(
        shell, io_dir, ["read"], airbyte_entrypoint=shell.run(str(connector)), grace=0.5
    )
    run.wait_stdout("ready")
    run.mark()
    done = run.finish()
    assert done.returncode == 128 + signal.SIGKILL
    assert "still running 0.5s after TERM: sending KILL" in done.log
    assert done.exit_file == "137\n"


SLOW_SHUTDOWN = """
trap 'sleep 0.3; echo cleaned-up; : >"$DONE"; exit 0' TERM
echo ready
while :; do sleep 0.05; done
"""


def test_wrapper_waits_for_grandchildren_to_finish(
    shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    """An intermediate shell dies on TERM at once; the wrapper still waits for the connector."""
    connector = write_script(tmp_path / "c.sh", SLOW_SHUTDOWN)
    done_file = tmp_path / "done"
    entry = f"sh -c '{shell.run(str(connector))}; echo unreachable'"
    run = WrapperRun(
        shell, io_dir, ["read"], airbyte_entrypoint=entry, extra_env={"DONE": str(done_file)}
    )
    run.wait_stdout("ready")
    run.mark()
    run.proc.wait(timeout=60)
    # The wrapper exited only after the connector finished its shutdown.
    assert done_file.exists()
    done = run.finish()
    assert "cleaned-up" in done.stdout
    assert "unreachable" not in done.stdout
    assert done.returncode != 0


def test_sigterm_to_the_wrapper_stops_the_connector(
    shell: Shell, io_dir: Path, tmp_path: Path
) -> None:
    """As a container's main process: `docker stop` / pod deletion send SIGTERM."""
    connector = write_script(tmp_path / "c.sh", TERM_HANDLER)
    run = WrapperRun(shell, io_dir, ["read"], airbyte_entrypoint=shell.run(str(connector)))
    run.wait_stdout("ready")
    run.proc.send_signal(signal.SIGTERM)
    done = run.finish()
    assert done.returncode == TERMINATED_EXIT_CODE
    assert done.stdout == "ready\ngot-term\n"
    assert "the wrapper received SIGTERM" in done.log
    assert (io_dir / "terminate").read_text() == "the wrapper received SIGTERM\n"


def test_marker_while_waiting_for_a_relay(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    """No stdin relay ever comes: the connector never starts, the marker still ends the wrapper."""
    ran = tmp_path / "ran"
    run = WrapperRun(
        shell,
        io_dir,
        ["write"],
        airbyte_entrypoint=f": > '{ran}'",
        reads_stdin=True,
    )
    wait_for((io_dir / "stdin").exists, "the stdin FIFO")
    run.mark()
    done = run.finish()
    assert done.returncode == TERMINATED_EXIT_CODE
    assert not ran.exists()
    assert done.exit_file == "143\n"


def test_marker_present_before_start(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    (io_dir / "terminate").write_text("ferry gave up\n")
    ran = tmp_path / "ran"
    done = WrapperRun(
        shell, io_dir, ["read"], airbyte_entrypoint=f": > '{ran}'", relays=False
    ).finish()
    assert done.returncode == TERMINATED_EXIT_CODE
    assert "before the connector started (ferry gave up)" in done.log
    assert not ran.exists()
    assert done.exit_file == "143\n"


def test_fifos_are_world_writable(shell: Shell, io_dir: Path, tmp_path: Path) -> None:
    """The connector may run as another user than the (root) sidecars."""
    cat = write_script(tmp_path / "cat.sh", CAT)
    done = WrapperRun(
        shell, io_dir, ["write"], airbyte_entrypoint=shell.run(str(cat)), reads_stdin=True
    )
    writer = done.feed(b"")
    finished = done.finish()
    writer.join()
    assert finished.returncode == 0
    for name in ("stdin", "stdout", "stderr"):
        assert os.stat(io_dir / name).st_mode & 0o777 == 0o666
