"""State and run history, behind one small synchronous interface (`Store`).

`open_store(url)` picks the implementation: SQLite today (the default, in $FERRY_HOME/ferry.db),
Postgres later. The rules for merging state messages are pure (`ferry.store.state`).
"""

from ferry.store.base import (
    ABANDONED,
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    AttemptRecord,
    RunRecord,
    Store,
    StoredConfig,
    StreamCounts,
    StreamTotals,
)
from ferry.store.sqlite import SqliteStore
from ferry.store.state import (
    ConnectionState,
    apply_state,
    apply_states,
    streams_touched,
    without_stream,
)
from ferry.store.url import default_store_url, open_store

__all__ = [
    "ABANDONED",
    "CANCELLED",
    "FAILED",
    "RUNNING",
    "SUCCEEDED",
    "AttemptRecord",
    "ConnectionState",
    "RunRecord",
    "SqliteStore",
    "Store",
    "StoredConfig",
    "StreamCounts",
    "StreamTotals",
    "apply_state",
    "apply_states",
    "default_store_url",
    "open_store",
    "streams_touched",
    "without_stream",
]
