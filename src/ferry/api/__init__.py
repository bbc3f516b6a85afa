"""ferry's public Python API; `import ferry` exposes it (see `ferry/__init__.py`)."""

from ferry.api.connection import Connection
from ferry.api.connectors import (
    CheckResult,
    async_check,
    async_discover,
    async_spec,
    check,
    discover,
    spec,
)
from ferry.api.reading import AsyncRead, Read, async_read, read
from ferry.api.syncing import SyncProgress, async_sync, state, sync
from ferry.engine.results import StreamResult, SyncResult

__all__ = [
    "AsyncRead",
    "CheckResult",
    "Connection",
    "Read",
    "StreamResult",
    "SyncProgress",
    "SyncResult",
    "async_check",
    "async_discover",
    "async_read",
    "async_spec",
    "async_sync",
    "check",
    "discover",
    "read",
    "spec",
    "state",
    "sync",
]
