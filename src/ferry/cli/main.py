"""The `ferry` command. Command groups register themselves from their own modules.

Every FerryError is printed as `ferry: error: <message>` (secrets masked) and its exit code
returned; anything unexpected exits 3 with a one-line message (the traceback with --debug or
FERRY_DEBUG=1). When its output is closed (`ferry state show C | head -1`) ferry exits quietly
with 141, as a Unix tool killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import traceback
from collections.abc import Sequence

from ferry.cli import connector_commands, sync_commands
from ferry.cli.common import LOG_FORMATS, masked_output, setup_logging
from ferry.engine.secrets import mask
from ferry.errors import EXIT_CANCELLED, EXIT_CRASHED, EXIT_INVALID_INPUT, FerryError
from ferry.store.owner import sweep_run_dir

EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry",
        description="Run Airbyte-Protocol connectors and sync sources into destinations.",
    )
    _global_options(parser, suppress=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    connector_commands.register(subparsers)
    sync_commands.register(subparsers)
    for subparser in _all_subparsers(parser):
        _global_options(subparser, suppress=True)
    return parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """-v/--debug/--log-format before or after the command; a subcommand's copy must not reset
    the value."""
    verbose_default = argparse.SUPPRESS if suppress else 0
    debug_default = argparse.SUPPRESS if suppress else False
    format_default = argparse.SUPPRESS if suppress else None
    try:
        parser.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=verbose_default,
            help="more output: -v connector logs, -vv debug",
        )
        parser.add_argument(
            "--debug",
            action="store_true",
            default=debug_default,
            help="debug logs and tracebacks (also FERRY_DEBUG=1)",
        )
        parser.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=format_default,
            help="logs on stderr as text (default) or one JSON object per line "
            "(also FERRY_LOG_FORMAT)",
        )
    except argparse.ArgumentError:
        pass  # a command that defines these itself keeps its own


def _all_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_all_subparsers(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_INVALID_INPUT
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID_INPUT
    debug = bool(args.debug) or os.environ.get("FERRY_DEBUG") == "1"
    log_format = args.log_format or os.environ.get("FERRY_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        print(
            f"ferry: error: FERRY_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}",
            file=sys.stderr,
        )
        return EXIT_INVALID_INPUT
    args.log_format = log_format
    setup_logging(args.verbose, debug, log_format)
    sweep_run_dir()
    try:
        with masked_output():
            code = _run(args, debug, json_logs=log_format == "json")
        sys.stdout.flush()  # here, not at exit: a closed pipe is then an error we can catch
    except BrokenPipeError:
        # Whoever read the output stopped reading; nothing more can be said to it. Later
        # flushes (at exit) must not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _run(args: argparse.Namespace, debug: bool, *, json_logs: bool = False) -> int:
    try:
        return int(args.handler(args))
    except BrokenPipeError as error:
        if _stdout_closed():
            raise
        return _unexpected(error, debug, json_logs)
    except FerryError as error:
        _report(str(error), debug, json_logs)
        return error.exit_code
    except KeyboardInterrupt:
        if json_logs:
            logging.getLogger("ferry").error("interrupted")
        else:
            print("ferry: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as error:
        return _unexpected(error, debug, json_logs)


def _unexpected(error: Exception, debug: bool, json_logs: bool = False) -> int:
    hint = "" if debug else " (run with --debug for the traceback)"
    _report(f"unexpected {type(error).__name__}: {error}{hint}", debug, json_logs)
    return EXIT_CRASHED


def _stdout_closed() -> bool:
    """Whether ferry's own output is what broke (rather than a pipe to a connector): the
    write end of a pipe nobody reads any more polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # no poll() on this platform, no stdout
        return False
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in events)


def _report(message: str, debug: bool, json_logs: bool) -> None:
    """The error that ends the command: a text line, or with JSON logs an error log record."""
    if json_logs:
        logging.getLogger("ferry").error("%s", message, exc_info=debug)
        return
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"ferry: error: {mask(message)}", file=sys.stderr)
