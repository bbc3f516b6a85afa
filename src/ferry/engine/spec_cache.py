"""Connector specs kept on disk, keyed by the runtime's fingerprint of the connector's code.

A spec changes only when the connector does (the Airbyte platform stores it with the connector
definition), so `ferry sync` reads it from `$FERRY_HOME/cache/specs/<sha256 of the
fingerprint>.json` instead of starting the connector once more. Each file holds the fingerprint
it was written for and the spec; an unreadable or foreign file is ignored (and then replaced).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ferry.engine.cache_files import cache_dir, read_entry, write_entry
from ferry.errors import DecodeError
from ferry.protocol import convert, to_builtins
from ferry.protocol.messages import ConnectorSpecification

logger = logging.getLogger("ferry.spec_cache")


def spec_cache_dir() -> Path:
    return cache_dir("specs")


def cache_file(fingerprint: str) -> Path:
    name = hashlib.sha256(fingerprint.encode()).hexdigest()
    return spec_cache_dir() / f"{name}.json"


def load_spec(fingerprint: str) -> ConnectorSpecification | None:
    """The spec cached for `fingerprint`, or None (absent, unreadable or corrupt)."""
    path = cache_file(fingerprint)
    entry = read_entry(path, logger, logging.WARNING, "spec")
    if entry is None:
        return None
    try:
        written_for = entry["fingerprint"]
        spec = convert(entry["spec"], ConnectorSpecification)
    except (KeyError, TypeError, ValueError, DecodeError) as error:
        logger.warning("ignoring the corrupt cached spec %s: %s", path, error)
        return None
    if written_for != fingerprint:
        logger.warning("ignoring the cached spec %s: it was written for another connector", path)
        return None
    return spec


def store_spec(fingerprint: str, spec: ConnectorSpecification) -> None:
    """Cache `spec` for `fingerprint`; a failure only costs a spec run later, so it is logged."""
    entry = {"fingerprint": fingerprint, "spec": to_builtins(spec)}
    write_entry(cache_file(fingerprint), entry, logger, "spec")
