"""Discovered catalogs kept on disk, so that `ferry sync` need not run `discover` every time.

The Airbyte platform does not discover before each sync either: it keeps the catalog it
discovered for a connector's version and config, and discovers again before a sync only once
that catalog is a day old. ferry keeps one file per (connector code, exact config, kind) under
`$FERRY_HOME/cache/catalogs/`: the connector's code is the runtime's fingerprint (the one the
spec cache uses), the config is the very bytes discover ran with, and the kind tells a source's
CATALOG from a destination's DESTINATION_CATALOG.

A file's name is an HMAC of those, under a random key kept in the same directory (0600): a bare
hash of a config would let whoever sees the names test guesses of its secrets offline. A file
holds its own name (a copied or foreign file is ignored), when the catalog was discovered, and
the catalog; never the config. Anything unreadable is ignored (logged at debug) and replaced by
the next discover.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ferry.engine.cache_files import cache_dir, read_entry, write_atomically, write_entry
from ferry.errors import DecodeError
from ferry.protocol import convert, to_builtins
from ferry.protocol.messages import DESTINATION_CATALOG, AirbyteCatalog, DestinationCatalog

logger = logging.getLogger("ferry.catalog_cache")

MAX_AGE_SECONDS = 24 * 3600.0  # the platform's: it discovers again before a sync after a day
KEY_FILE = ".key"
KEY_BYTES = 32

Catalog = AirbyteCatalog | DestinationCatalog


@dataclass(frozen=True)
class CatalogKey:
    """What a discovered catalog depends on (as far as ferry can know without running it)."""

    fingerprint: str  # the runtime's fingerprint of the connector's code
    kind: str  # CATALOG (a source's) or DESTINATION_CATALOG
    config: bytes  # the config file discover runs with, byte for byte
    env: Mapping[str, str] = field(default_factory=dict)  # the connection's `env` for it


@dataclass(frozen=True)
class CachedCatalog:
    catalog: Catalog
    age: float  # seconds since it was discovered


def entry_name(secret: bytes, key: CatalogKey) -> str:
    """The HMAC-SHA256 of `key` under `secret`: equal keys, equal names; nothing about the
    config can be checked without the secret."""
    identity = json.dumps([key.kind, key.fingerprint, sorted(key.env.items())]).encode()
    # JSON has no raw newline, so the identity ends where the config begins.
    return hmac.new(secret, identity + b"\n" + key.config, hashlib.sha256).hexdigest()


def catalog_cache_dir() -> Path:
    return cache_dir("catalogs")


def load_catalog(key: CatalogKey, max_age: float = MAX_AGE_SECONDS) -> CachedCatalog | None:
    """The catalog cached for `key` if it was discovered less than `max_age` seconds ago."""
    secret = _secret()
    if secret is None:
        return None
    name = entry_name(secret, key)
    path = catalog_cache_dir() / f"{name}.json"
    entry = read_entry(path, logger, logging.DEBUG, "catalog")
    if entry is None:
        return None
    try:
        if entry["name"] != name or entry["kind"] != key.kind:
            raise ValueError("it was written for another connector or config")
        age = time.time() - float(entry["discovered_at"])
        catalog = convert(entry["catalog"], _catalog_type(key.kind))
    except (KeyError, TypeError, ValueError, DecodeError) as error:
        logger.debug("ignoring the cached catalog %s: %s", path, error)
        return None
    if not 0 <= age < max_age:
        logger.debug("the cached catalog %s is %.0f s old; discovering again", path, age)
        return None
    return CachedCatalog(catalog, age)


def store_catalog(key: CatalogKey, catalog: Catalog) -> None:
    """Cache `catalog` for `key`, and remove the entries that have expired."""
    secret = _secret()
    if secret is None:
        return
    now = time.time()
    name = entry_name(secret, key)
    entry = {"name": name, "kind": key.kind, "discovered_at": now, "catalog": to_builtins(catalog)}
    write_entry(catalog_cache_dir() / f"{name}.json", entry, logger, "catalog")
    _remove_expired(now)


def _catalog_type(kind: str) -> type[Catalog]:
    return DestinationCatalog if kind == DESTINATION_CATALOG else AirbyteCatalog


def _remove_expired(now: float) -> None:
    """A config that changes on every sync (a rotating OAuth token) leaves one entry per sync:
    expired entries go, so the directory stays small."""
    with contextlib.suppress(OSError):
        for path in catalog_cache_dir().glob("*.json"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > MAX_AGE_SECONDS:
                    path.unlink()


def _secret() -> bytes | None:
    """This FERRY_HOME's HMAC key, made on first use; None when it cannot be had (no cache)."""
    path = catalog_cache_dir() / KEY_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        return _new_secret(path, replacing=False)
    except OSError as error:
        logger.debug("not caching catalogs: cannot read the key %s: %s", path, error)
        return None
    if len(secret) != KEY_BYTES:
        logger.debug("replacing the corrupt catalog cache key %s", path)
        return _new_secret(path, replacing=True)
    return secret


def _new_secret(path: Path, *, replacing: bool) -> bytes | None:
    """A new random key in `path` (0600). Two processes may race to make it: the first one
    made wins and both use it."""
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, secret, replace=replacing)
    except FileExistsError:
        return _made_meanwhile(path)
    except OSError as error:
        logger.debug("not caching catalogs: cannot make the key %s: %s", path, error)
        return None
    return secret


def _made_meanwhile(path: Path) -> bytes | None:
    try:
        secret = path.read_bytes()
    except OSError:
        return None
    return secret if len(secret) == KEY_BYTES else None
