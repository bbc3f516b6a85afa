"""ferry: run Airbyte-Protocol connectors anywhere — from the command line or from Python.

    import ferry
    result = ferry.sync("faker-to-duckdb.yaml")
    table = ferry.read("source-faker", {"count": 1000})["users"].to_arrow()

The names below are the public API (README: "Python API"); every other module is private. The
API is imported on first use, so programs that only need `ferry.errors` (the first-party
connectors) do not pay for the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ferry.errors import (
    Cancelled,
    ConfigError,
    ConnectorCrashed,
    ConnectorFailed,
    ConnectorNotFound,
    FerryError,
    ImageUnavailable,
    InstallError,
    ProtocolViolation,
    RuntimeUnavailable,
    StoreError,
)

if TYPE_CHECKING:
    from ferry.api import (
        AsyncRead,
        CheckResult,
        Connection,
        Read,
        StreamResult,
        SyncProgress,
        SyncResult,
        async_check,
        async_discover,
        async_read,
        async_spec,
        async_sync,
        check,
        discover,
        read,
        spec,
        state,
        sync,
    )

__version__ = "0.1.0"

__all__ = [
    "AsyncRead",
    "Cancelled",
    "CheckResult",
    "ConfigError",
    "Connection",
    "ConnectorCrashed",
    "ConnectorFailed",
    "ConnectorNotFound",
    "FerryError",
    "ImageUnavailable",
    "InstallError",
    "ProtocolViolation",
    "Read",
    "RuntimeUnavailable",
    "StoreError",
    "StreamResult",
    "SyncProgress",
    "SyncResult",
    "__version__",
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
# What `ferry.api` provides, imported at first access.
_API = frozenset(__all__) - set(globals())


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module("ferry.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ferry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
