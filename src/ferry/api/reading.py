"""`ferry.read` / `ferry.async_read`: a source's records in Python, without a destination.

Nothing runs until the records are asked for; every iteration (and each `to_duckdb` or
`to_arrow`) runs the source once more. Memory stays bounded whatever the volume: the source's
output is read a block (256 KiB) at a time, records are decoded a block at a time, and
`to_duckdb` writes them in batches through destination-duckdb's own writer (the same typed
tables a sync gives). `to_arrow` loads the stream into an in-memory DuckDB table that way and
exports it as Arrow record batches: no Python object per record is ever held beyond a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ferry.api._logs import secrets_masked
from ferry.api._portal import LoopThread
from ferry.api.connectors import Config, connector_config, connector_ref
from ferry.engine.read import ReadPlan, plan_read, read_lines
from ferry.errors import ConfigError, DecodeError, ProtocolViolation
from ferry.protocol import decode_message
from ferry.protocol.messages import LOG, RECORD
from ferry.runtimes.base import ConnectorRef
from ferry_connectors import destination_duckdb
from ferry_connectors._io import ConnectorError

if TYPE_CHECKING:
    import pyarrow

logger = logging.getLogger("ferry.read")

ARROW_BATCH_ROWS = 64 * 1024


@dataclass(frozen=True, eq=False)
class Read:
    """The records of a source: iterate it for dicts, `read["users"]` for one stream's.
    `ferry.read` makes it."""

    connector: str
    config: dict[str, Any]
    streams: list[str] | None
    state: list[Mapping[str, Any]] | None
    runtime: str
    _ref: ConnectorRef = field(repr=False)

    def __getitem__(self, stream: str) -> Read:
        """The same read, of one stream (NAME or NAMESPACE.NAME)."""
        return replace(self, streams=[stream])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lines() as (_, blocks):
            for block in blocks:
                yield from records_of(block)

    def to_duckdb(
        self, target: str | Path | duckdb.DuckDBPyConnection, *, schema: str = "main"
    ) -> list[str]:
        """Write every stream into a table of its name in `target` (a database file, created if
        missing, or an open DuckDB connection), typed as destination-duckdb types it. Without
        a `state` the tables are replaced; with one, rows are appended (or deduplicated by
        primary key). Returns the tables' qualified names."""
        if isinstance(target, duckdb.DuckDBPyConnection):
            return self._write(target, schema)
        try:
            con = destination_duckdb.connect(str(target))
        except (duckdb.Error, OSError) as error:
            raise ConfigError(f"cannot open the DuckDB database {target}: {error}") from None
        try:
            return self._write(con, schema)
        finally:
            con.close()

    def to_arrow(self) -> pyarrow.Table:
        """The records of a read of ONE stream as a pyarrow Table (needs `ferry[arrow]`)."""
        try:
            import pyarrow
        except ImportError:
            raise ConfigError("to_arrow() needs pyarrow: pip install 'ferry[arrow]'") from None
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            tables = self._write(con, "main", one_stream=True)
            relation = con.sql(f"SELECT * FROM {tables[0]}")
            # DuckDB 2 renamed fetch_arrow_reader (deprecated there) to to_arrow_reader.
            batches = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            reader = batches(ARROW_BATCH_ROWS)
            return pyarrow.Table.from_batches(reader, reader.schema)
        finally:
            con.close()

    def _write(
        self, con: duckdb.DuckDBPyConnection, schema: str, *, one_stream: bool = False
    ) -> list[str]:
        with self._lines() as (plan, blocks):
            if one_stream and len(plan.catalog.streams) != 1:
                names = ", ".join(c.stream.name for c in plan.catalog.streams)
                raise ConfigError(
                    f"to_arrow() reads one stream and this read has {names}: pick one, "
                    'e.g. read["users"].to_arrow()'
                )
            with tempfile.TemporaryDirectory(prefix="ferry-read-") as workdir:
                writer = destination_duckdb.Writer(
                    con, {"schema": schema}, plan.catalog, Path(workdir), output=_writer_output
                )
                writer.prepare()
                try:
                    writer.run(line + b"\n" for block in blocks for line in block)
                except ConnectorError as error:  # what the writer would report as a connector
                    raise ProtocolViolation(f"{self.connector}: {error.message}") from None
        return [table.qualified for table in writer.tables.values()]

    @contextlib.contextmanager
    def _lines(self) -> Iterator[tuple[ReadPlan, Generator[list[bytes], None, None]]]:
        with secrets_masked(), LoopThread() as portal:
            plan = portal.call(self._plan())
            blocks = portal.iterate(read_lines(plan))
            try:
                yield plan, blocks
            finally:
                blocks.close()

    async def _plan(self) -> ReadPlan:
        return await plan_read(self._ref, self.config, streams=self.streams, state=self.state)


@dataclass(frozen=True, eq=False)
class AsyncRead:
    """`Read` for asyncio code: `async for record in ...`; `to_duckdb`/`to_arrow` are awaited
    (they run the blocking DuckDB work in a thread). `ferry.async_read` makes it."""

    _read: Read

    def __getitem__(self, stream: str) -> AsyncRead:
        return AsyncRead(self._read[stream])

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        with secrets_masked():
            plan = await self._read._plan()  # noqa: SLF001 (this module's own class)
            lines = read_lines(plan)
            try:
                async for block in lines:
                    for record in records_of(block):
                        yield record
            finally:
                await lines.aclose()  # type: ignore[attr-defined]

    async def to_duckdb(
        self, target: str | Path | duckdb.DuckDBPyConnection, *, schema: str = "main"
    ) -> list[str]:
        return await asyncio.to_thread(self._read.to_duckdb, target, schema=schema)

    async def to_arrow(self) -> pyarrow.Table:
        return await asyncio.to_thread(self._read.to_arrow)


def read(
    connector: str,
    config: Config,
    streams: Sequence[str] | None = None,
    state: Sequence[Mapping[str, Any]] | None = None,
    *,
    runtime: str = "local",
) -> Read:
    """Read a source without a destination. `connector` as for `ferry.spec`; `config` a mapping
    or a file; `streams` NAME or NAMESPACE.NAME (default: all); `state` what `ferry.state`
    returns, to read incrementally from there (default: everything, full refresh)."""
    if isinstance(streams, str):
        raise ConfigError(f"streams={streams!r}: give a list of stream names")
    return Read(
        connector,
        connector_config(config),
        streams=None if streams is None else list(streams),
        state=None if state is None else list(state),
        runtime=runtime,
        _ref=connector_ref(connector, runtime),
    )


def async_read(
    connector: str,
    config: Config,
    streams: Sequence[str] | None = None,
    state: Sequence[Mapping[str, Any]] | None = None,
    *,
    runtime: str = "local",
) -> AsyncRead:
    """`ferry.read` for asyncio code."""
    return AsyncRead(read(connector, config, streams, state, runtime=runtime))


def records_of(block: list[bytes]) -> Iterator[dict[str, Any]]:
    for line in block:
        try:
            message = decode_message(line)
        except DecodeError:
            continue  # the engine passes only lines that decoded as messages
        if message.type == RECORD and message.record is not None:
            yield message.record.data


def _writer_output(line: bytes) -> None:
    """What the DuckDB writer would print as a connector: its logs go to ferry's log; its state
    echoes mean nothing here."""
    with contextlib.suppress(DecodeError):
        message = decode_message(line)
        if message.type == LOG and message.log is not None:
            logger.log(
                logging.WARNING if message.log.level == "WARN" else logging.INFO,
                "%s",
                message.log.message,
            )
