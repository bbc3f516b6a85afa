"""`ferry spec|check|discover CONNECTOR`, `ferry connectors install|list`, `ferry gc`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ferry.cli.common import Subparsers, print_table
from ferry.engine import commands
from ferry.engine.commands import ConfigSink
from ferry.engine.config import load_config, rewrite_config_file
from ferry.protocol import to_builtins
from ferry.protocol.messages import AirbyteCatalog, AirbyteStream, DestinationCatalog
from ferry.runtimes.base import RUNTIME_NAMES, ConnectorRef
from ferry.runtimes.local.install import connectors_dir, install_connector, list_installed
from ferry.runtimes.resolve import resolve_reference

CONNECTOR_HELP = (
    "an installed connector, a command on PATH, a path, or docker:IMAGE / podman:IMAGE / "
    "kubernetes:IMAGE"
)


def register(subparsers: Subparsers) -> None:
    spec = subparsers.add_parser("spec", help="print a connector's spec (JSON)")
    _connector_arguments(spec, config=False)
    spec.set_defaults(handler=_spec)

    check = subparsers.add_parser("check", help="ask a connector whether a config works")
    _connector_arguments(check, config=True)
    check.set_defaults(handler=_check)

    discover = subparsers.add_parser(
        "discover", help="list a source's streams, or the objects and modes a destination offers"
    )
    _connector_arguments(discover, config=True)
    discover.set_defaults(handler=_discover)

    connectors = subparsers.add_parser("connectors", help="install and list connectors")
    actions = connectors.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install", help="install a connector from PyPI or a local path into its own venv"
    )
    install.add_argument("target", metavar="NAME|PATH|PKG==VERSION")
    install.add_argument("--name", help="install under this name (default: from the package)")
    install.set_defaults(handler=_install)
    listing = actions.add_parser("list", help="list installed connectors")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    gc = subparsers.add_parser("gc", help="remove containers, pods and secrets ferry left behind")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.set_defaults(handler=_gc)


def _connector_arguments(parser: argparse.ArgumentParser, *, config: bool) -> None:
    parser.add_argument("connector", metavar="CONNECTOR", help=CONNECTOR_HELP)
    if config:
        parser.add_argument(
            "--config",
            required=True,
            type=Path,
            metavar="FILE",
            help="connector config (JSON or YAML; ${NAME} reads the environment)",
        )
    parser.add_argument(
        "--runtime",
        choices=RUNTIME_NAMES,
        default="local",
        help="runtime for a reference without a prefix (default: local)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _connector(args: argparse.Namespace) -> ConnectorRef:
    return resolve_reference(args.connector, default_runtime=args.runtime)


def _print_json(value: Any, *, compact: bool = False) -> None:
    print(json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=2))


def _spec(args: argparse.Namespace) -> int:
    # The user asks the connector itself; what it answers refreshes the spec `ferry sync` uses.
    spec = asyncio.run(commands.fetch_spec(_connector(args), refresh_cache=True))
    _print_json(to_builtins(spec), compact=args.json)
    return 0


def _check(args: argparse.Namespace) -> int:
    ref = _connector(args)
    config = load_config(args.config)
    status = asyncio.run(commands.check(ref, config, on_config=_write_back(args.config)))
    succeeded = status.status == "SUCCEEDED"
    if args.json:
        _print_json(to_builtins(status))
    elif succeeded:
        print("SUCCEEDED")
    else:
        print(f"FAILED: {status.message or 'the connector gave no reason'}")
    return 0 if succeeded else 1


def _discover(args: argparse.Namespace) -> int:
    ref = _connector(args)
    config = load_config(args.config)
    catalog = asyncio.run(commands.discover_any(ref, config, on_config=_write_back(args.config)))
    if args.json:
        _print_json(to_builtins(catalog))
    elif isinstance(catalog, DestinationCatalog):
        _print_operations(catalog)
    else:
        _print_catalog(catalog)
    return 0


def _write_back(path: Path) -> ConfigSink:
    """Keeps a config the connector sent (a rotated token) in the --config file at once."""

    def keep(config: dict[str, Any]) -> None:
        backup = rewrite_config_file(path, config)
        print(
            f"ferry: the connector sent an updated config; wrote it to {path} "
            f"(the previous content is in {backup})",
            file=sys.stderr,
        )

    return keep


def _print_operations(catalog: DestinationCatalog) -> None:
    if not catalog.operations:
        print("the destination offers no operations")
        return
    rows = [
        [
            operation.object_name,
            operation.sync_mode,
            ", ".join(".".join(key) for key in operation.matching_keys or []) or "-",
        ]
        for operation in catalog.operations
    ]
    print_table(rows, ["OBJECT", "SYNC MODE", "MATCHING KEYS"])


def _print_catalog(catalog: AirbyteCatalog) -> None:
    if not catalog.streams:
        print("the connector offers no streams")
        return
    rows = [_stream_row(stream) for stream in catalog.streams]
    print_table(rows, ["STREAM", "SYNC MODES", "CURSOR", "PRIMARY KEY"])


def _stream_row(stream: AirbyteStream) -> list[str]:
    name = f"{stream.namespace}.{stream.name}" if stream.namespace else stream.name
    cursor = ".".join(stream.default_cursor_field or [])
    if cursor and stream.source_defined_cursor:
        cursor += " (source-defined)"
    keys = ", ".join(".".join(path) for path in stream.source_defined_primary_key or [])
    return [name, ", ".join(stream.supported_sync_modes), cursor or "-", keys or "-"]


def _install(args: argparse.Namespace) -> int:
    print(f"ferry: installing {args.target} into {connectors_dir()} ...", file=sys.stderr)
    installed = install_connector(args.target, name=args.name)
    print(
        f"installed {installed.name} {installed.version} ({installed.package}): "
        f"{installed.executable_path}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    installed = list_installed()
    if args.json:
        _print_json([connector.as_dict() for connector in installed])
    elif not installed:
        print(f"no connectors installed in {connectors_dir()} (ferry connectors install NAME)")
    else:
        rows = [[c.name, c.version, str(c.executable_path)] for c in installed]
        print_table(rows, ["NAME", "VERSION", "EXECUTABLE"])
    return 0


def _gc(args: argparse.Namespace) -> int:
    from ferry.runtimes.gc import collect_garbage  # loads container clients: only when asked

    lines = collect_garbage(dry_run=args.dry_run)
    for line in lines:
        print(line)
    if not lines:
        print("nothing to remove")
    return 0
