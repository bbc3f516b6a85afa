"""Connector specs kept on disk, keyed by the runtime's fingerprint of the connector's code.

A spec changes only when the connector does (the Airbyte platform stores it with the connector
definition), so `ferry sync` reads it from `$FERRY_HOME/cache/specs/<sha256 of the
fingerprint>.json` instead of starting the connector once more. Each file holds the fingerprint
it was written for and the spec; an unreadable or foreign file is ignored (and then replaced).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from ferry.errors import DecodeError
from ferry.home import ferry_home
from ferry.protocol import convert, to_builtins
from ferry.protocol.messages import ConnectorSpecification

logger = logging.getLogger("ferry.spec_cache")


def spec_cache_dir() -> Path:
    return ferry_home() / "cache" / "specs"


def cache_file(fingerprint: str) -> Path:
    name = hashlib.sha256(fingerprint.encode()).hexdigest()
    return spec_cache_dir() / f"{name}.json"


def load_spec(fingerprint: str) -> ConnectorSpecification | None:
    """The spec cached for `fingerprint`, or None (absent, unreadable or corrupt)."""
    path = cache_file(fingerprint)
    try:
        entry = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("ignoring the cached spec %s, which cannot be read: %s", path, error)
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
    path = cache_file(fingerprint)
    data = json.dumps({"fingerprint": fingerprint, "spec": to_builtins(spec)}).encode()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(path, data)
    except OSError as error:
        logger.warning("could not cache the connector's spec in %s: %s", path, error)


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a part (no fsync: a file lost in a crash
    is only a cache miss, and a truncated one is ignored as corrupt)."""
    fd, temporary = tempfile.mkstemp(prefix=".spec-", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
