"""`ferry.Connection`: a connection file's content, loaded from YAML or built in code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ferry.engine import connection as engine


class Connection:
    """A source, a destination and the streams to sync, validated like a connection file.

    Build it in code with the same keys a connection file has::

        ferry.Connection(
            "faker-to-duckdb",
            source={"connector": "source-faker", "config": {"count": 100}},
            destination={"connector": "destination-duckdb", "config": {"path": "faker.duckdb"}},
            streams=["users"],  # or mappings: {"name": "users", "sync_mode": "incremental"}
        )

    or load one with `Connection.from_file(path)` / `Connection.from_dict(data)`. Every problem
    raises `ferry.ConfigError` naming it.
    """

    def __init__(
        self,
        name: str,
        *,
        source: Mapping[str, Any],
        destination: Mapping[str, Any],
        runtime: str = "local",
        streams: Sequence[str | Mapping[str, Any]] | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "name": name,
            "runtime": runtime,
            "source": dict(source),
            "destination": dict(destination),
        }
        if streams is not None:
            data["streams"] = [{"name": s} if isinstance(s, str) else dict(s) for s in streams]
        self._connection = engine.parse_connection(data, origin=f"connection {name!r}")

    @classmethod
    def from_file(cls, path: str | Path) -> Connection:
        """A connection file (YAML), as `ferry sync FILE` reads it."""
        return cls._of(engine.load_connection(Path(path)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Connection:
        """A connection file's content as plain data (e.g. parsed from YAML or JSON)."""
        return cls._of(engine.parse_connection(dict(data)))

    @classmethod
    def _of(cls, parsed: engine.Connection) -> Connection:
        connection = cls.__new__(cls)
        connection._connection = parsed  # noqa: SLF001 (the class's own, set without __init__)
        return connection

    @property
    def name(self) -> str:
        return self._connection.name

    @property
    def runtime(self) -> str:
        return self._connection.runtime

    @property
    def streams(self) -> list[str] | None:
        """The selected streams (NAMESPACE.NAME when namespaced); None: every stream."""
        selected = self._connection.streams
        if selected is None:
            return None
        return [f"{s.namespace}.{s.name}" if s.namespace else s.name for s in selected]

    def __repr__(self) -> str:
        return f"<ferry.Connection {self.name!r}>"


def engine_connection(connection: str | Path | Connection) -> engine.Connection:
    if isinstance(connection, Connection):
        return connection._connection  # noqa: SLF001 (this module's own class)
    return engine.load_connection(Path(connection))
