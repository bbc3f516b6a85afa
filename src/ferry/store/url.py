"""Choosing a store by URL.

- None: `sqlite:///$FERRY_HOME/ferry.db` (FERRY_HOME defaults to ~/.ferry)
- `sqlite:///abs/path.db` (also `sqlite:////abs/path.db`), `sqlite://:memory:`
- a plain file path, absolute or relative to the working directory
- `postgresql://USER:PASSWORD@HOST[:PORT]/DB[?PARAMS]` (also `postgres://`): a PostgreSQL
  store shared by ferry processes on any host (libpq's URL: `?sslmode=...`, `?host=/socket/dir`)
"""

from __future__ import annotations

import re
from pathlib import Path

from ferry.errors import ConfigError
from ferry.home import ferry_home
from ferry.store.base import Store, redacted
from ferry.store.sqlite import SqliteStore

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_store_url() -> str:
    return f"sqlite://{ferry_home() / 'ferry.db'}"


def sqlite_path(url: str) -> str:
    """The file path (or `:memory:`) a SQLite URL or plain path names."""
    match = _SCHEME.match(url)
    if match is None:
        if url == ":memory:":
            return url
        return str(Path(url).expanduser().absolute())
    if match.group(1).lower() != "sqlite":
        raise ConfigError(f"not a SQLite store URL: {redacted(url)}")
    rest = url[match.end() :]
    if rest == ":memory:":
        return rest
    if not rest.startswith("/") or rest.strip("/") == "":
        raise ConfigError(
            f"store URL {url!r} names no absolute file: write sqlite:///ABSOLUTE/PATH.db "
            "or give a plain file path"
        )
    return "/" + rest.lstrip("/")


def open_store(url: str | None = None) -> Store:
    """Open (creating if needed) the store a URL names; None opens the default store."""
    if url is None:
        url = default_store_url()
    if not url.strip():
        raise ConfigError("the store URL is empty")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if scheme in ("postgres", "postgresql"):
        from ferry.store.postgres import PostgresStore  # psycopg loads only when used

        return PostgresStore(url)
    if scheme not in (None, "sqlite"):
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r} in {redacted(url)}: "
            "use sqlite:///PATH, a plain file path, or postgresql://USER:PASSWORD@HOST/DB"
        )
    path = sqlite_path(url)
    return SqliteStore(path, url=url if scheme else f"sqlite://{path}")
