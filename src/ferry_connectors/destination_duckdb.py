"""destination-duckdb: writes each configured stream into a typed DuckDB table.

Config: `path` (the database file, created with its parent directories if missing) and `schema`
(default `main`; a stream's namespace, when it has one, is used instead).

Tables. One table per stream, named after the stream (or its `destination_object_name`), with a
column per top-level property of the stream's JSON schema:
integer → BIGINT, number → DOUBLE, boolean → BOOLEAN, string → VARCHAR, string with format
date-time → TIMESTAMPTZ (TIMESTAMP for `airbyte_type: timestamp_without_timezone`), format date →
DATE; objects, arrays, unions of several types and anything unknown → JSON. `"null"` in a type list
only makes the column nullable. A schema without properties gives a single `_ferry_data` JSON column.
Metadata columns: `_ferry_raw_id` (UUID), `_ferry_extracted_at` (TIMESTAMPTZ from emitted_at),
`_ferry_meta` (JSON, see below) and `_ferry_generation_id` (the stream's generation_id, if any).
Properties that are not in the schema are not stored. An existing table keeps its columns and
their types (missing columns are added); values are cast to the existing type.

Values that do not fit. A value that cannot be cast to its column's type (the string "abc" in a
BIGINT column, 12.5 in an integer column, a malformed timestamp) is stored as NULL, and the row's
`_ferry_meta` lists it: `{"changes":[{"field":"age","change":"NULLED",
"reason":"DESTINATION_TYPECAST_ERROR"}]}` (NULL when nothing was changed). At the end of a sync a
LOG message gives, per table, how many rows carry such changes. The sync does not fail for them.

Sync modes.
- append: rows are inserted.
- append_dedup: one row per primary key; the row with the greatest cursor wins (NULL cursors lose),
  ties go to the record that arrived last. The table is deduplicated at every commit, for the keys
  written in it (a table that already held duplicates keeps those of keys not written again).
- overwrite: the stream's rows go into a staging table, `_ferry_staging_<table>` in the same
  schema (created at the stream's first record or status; a crashed run's leftover is replaced),
  committed at each state like any write. When a STREAM_STATUS trace says the stream is COMPLETE,
  the staging table replaces the table at once (DROP + RENAME in one transaction: no row is
  copied, and until the commit the old table is what a crash leaves); a stream completed without
  records ends as an empty table. When it ends INCOMPLETE, or the input ends before its COMPLETE,
  the staging table is dropped, the table keeps its previous contents and a WARN log says so
  (Airbyte's platform, and ferry, send COMPLETE only after a successful source, and nothing but
  EOF after a failed one). Only an input from an orchestrator that sets no generation ids and
  sends no STREAM_STATUS at all swaps at its end. With a `generation_id` in the configured stream,
  the rows of that generation already in the table are kept, so a retried attempt of the same
  generation keeps what it committed.

Generations. Every row carries its stream's `generation_id` in `_ferry_generation_id`. A stream
whose `minimum_generation_id` is above 0 (a truncate refresh or a clear: minimum = generation)
drops the rows of older generations when its COMPLETE arrives, in the append modes too, in the
transaction that commits its last rows; without COMPLETE they stay. A minimum of 0 (a merge
refresh, an incremental sync) keeps every generation.

Transactions. Records are buffered per stream and inserted in batches: a batch is written to a
temporary file, one message line per row, and loaded by DuckDB's `read_csv` (one VARCHAR column)
in one INSERT ... SELECT that extracts and casts every column in SQL — no per-record work in
Python beyond routing. A batch
is flushed into the open transaction when 64 MiB are buffered; each STATE commits the transaction
and only then is echoed (with destinationStats.recordCount: the records of that stream since its
previous state, or all records since the previous state for GLOBAL/LEGACY states). At the end of
the input the rest is committed too. An input that holds no message at all changes nothing.
Measured on this project's 2-core VM (shared with other jobs, so CPU time is the fair figure)
with 200-byte generator records: `executemany` of parameter tuples ~400 rows/s (unusable);
`read_json` of the batch ~50 ms per call whatever its size (~130 k rows/s for batches of 10 000);
`read_csv` of whole lines + `json_extract_string` ~600 k rows/s for the SELECT alone. End to end,
1 M records with a state every 10 000: append 4.4 s of CPU (~230 k rows per CPU-second, Python
routing ~0.9 µs per line included), append_dedup 6.7 s (~150 k rows per CPU-second).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from ferry.errors import ConfigError, DecodeError
from ferry.home import make_run_dir
from ferry.protocol import decode_envelope, decode_message
from ferry.protocol.messages import (
    APPEND,
    APPEND_DEDUP,
    OVERWRITE,
    RECORD,
    STATE,
    STATE_STREAM,
    STREAM_COMPLETE,
    STREAM_INCOMPLETE,
    TRACE,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
)
from ferry.protocol.stream_status import stream_status_of
from ferry_connectors import _io

PROG = "destination-duckdb"
FLUSH_BYTES = 64 << 20
DEFAULT_MAX_LINE = 2 << 20
DEFAULT_BUFFER = 32 << 20

CONNECTION_SPECIFICATION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "DuckDB Destination Spec",
    "type": "object",
    "required": ["path"],
    "additionalProperties": True,
    "properties": {
        "path": {
            "title": "Database file",
            "description": "Path of the DuckDB database file; it is created if it does not exist.",
            "type": "string",
            "minLength": 1,
            "examples": ["./data.duckdb"],
            "order": 0,
        },
        "schema": {
            "title": "Schema",
            "description": "Schema of the tables of streams that have no namespace.",
            "type": "string",
            "minLength": 1,
            "default": "main",
            "order": 1,
        },
    },
}

# Metadata columns, in table order.
RAW_ID = "_ferry_raw_id"
EXTRACTED_AT = "_ferry_extracted_at"
META = "_ferry_meta"
GENERATION = "_ferry_generation_id"
DATA = "_ferry_data"
ORDINAL = "_ferry_ord"
# An overwrite writes into this table (same schema) until its stream is complete.
STAGING_PREFIX = "_ferry_staging_"
METADATA_COLUMNS = (
    (RAW_ID, "UUID"),
    (EXTRACTED_AT, "TIMESTAMPTZ"),
    (META, "JSON"),
    (GENERATION, "BIGINT"),
)
# plan_columns keeps these names (and the _ferry_ names select_sql uses inside) for itself
RESERVED = {
    RAW_ID,
    EXTRACTED_AT,
    META,
    GENERATION,
    DATA,
    ORDINAL,
    "_ferry_s",
    "_ferry_j",
    "_ferry_e",
}

INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
# Types cast from the value's text; every other type (JSON, lists, structs, ...) from its JSON.
TEXT_CAST_PREFIXES = (
    "VARCHAR", "DOUBLE", "FLOAT", "REAL", "DECIMAL", "BOOLEAN", "DATE", "TIME", "TIMESTAMP",
    "UUID", "INTERVAL", "BLOB",
)  # fmt: skip


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_pointer(path: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


# ------------------------------------------------------------------------------------------------
# JSON schema → columns (pure)
# ------------------------------------------------------------------------------------------------


def column_type(schema: Any) -> str:
    """The DuckDB type of one property's JSON schema."""
    if not isinstance(schema, dict):
        return "JSON"
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    types = [t for t in types if t != "null"]
    if len(types) != 1:
        return "JSON"  # no type, a union (also anyOf/oneOf/$ref without a type)
    kind = types[0]
    airbyte_type = schema.get("airbyte_type")
    if kind == "integer" or (kind == "number" and airbyte_type == "integer"):
        return "BIGINT"
    if kind == "number":
        return "DOUBLE"
    if kind == "boolean":
        return "BOOLEAN"
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time" or airbyte_type in (
            "timestamp_with_timezone",
            "timestamp_without_timezone",
        ):
            return "TIMESTAMP" if airbyte_type == "timestamp_without_timezone" else "TIMESTAMPTZ"
        if fmt == "date" or airbyte_type == "date":
            return "DATE"
        return "VARCHAR"
    return "JSON"


@dataclass
class Column:
    name: str  # column name in the table
    field: str  # property name in the record's data
    type: str  # DuckDB type


def plan_columns(json_schema: Any) -> list[Column]:
    """Columns for a stream's properties; names unique case-insensitively (DuckDB's rule)."""
    properties = json_schema.get("properties") if isinstance(json_schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return [Column(DATA, "", "JSON")]
    taken = {name.lower() for name in RESERVED}
    columns = []
    for prop, schema in properties.items():
        name = prop
        suffix = 1
        while name.lower() in taken:
            name = f"{prop}_{suffix}"
            suffix += 1
        taken.add(name.lower())
        columns.append(Column(name, prop, column_type(schema)))
    return columns


TYPE_ALIASES = {
    "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
    "TIMESTAMP_TZ": "TIMESTAMP WITH TIME ZONE",
}


def same_type(a: str, b: str) -> bool:
    def canonical(t: str) -> str:
        return TYPE_ALIASES.get(t.upper(), t.upper())

    return canonical(a) == canonical(b)


def is_text_cast(sql_type: str) -> bool:
    upper = sql_type.upper()
    if "[" in upper or ("(" in upper and not upper.startswith("DECIMAL")):
        return False
    return upper in INTEGER_TYPES or upper.startswith(TEXT_CAST_PREFIXES)


def _parse_sql(
    text_cols: list[Column], json_cols: list[Column], *, ordinal: bool, data: bool
) -> list[str]:
    """The innermost SELECT list: the line parsed for every scalar column's text and
    emitted_at (`s`, emitted_at last), the JSON columns (`j`) and the whole data (`d`)."""
    ptrs = [literal(json_pointer(["record", "data", c.field])) for c in text_cols]
    ptrs.append(literal("/record/emitted_at"))
    inner = [f"json_extract_string(l, [{', '.join(ptrs)}]) AS s"]
    if ordinal:
        inner.append("o")
    if json_cols:
        jptrs = ", ".join(literal(json_pointer(["record", "data", c.field])) for c in json_cols)
        inner.append(f"json_extract(l, [{jptrs}]) AS j")
    if data:
        inner.append("json_extract(l, '/record/data') AS d")
    return inner


def _typed_sql(text_cols: list[Column], json_cols: list[Column]) -> tuple[list[str], list[str]]:
    """Every column typed from `s`/`j`, and per castable column the condition of a value the
    cast nulled (raw is not null and typed is null)."""
    typed: list[str] = []
    nulled: list[str] = []
    for i, c in enumerate(text_cols, 1):
        typed.append(f"{_from_text(f's[{i}]', c.type)} AS {ident(c.name)}")
        if c.type.upper() != "VARCHAR":
            nulled.append(f"_ferry_s[{i}] IS NOT NULL AND {ident(c.name)} IS NULL")
    for i, c in enumerate(json_cols, 1):
        raw = f"j[{i}]"
        kept = raw if c.type.upper() == "JSON" else f"TRY_CAST({raw} AS {c.type})"
        typed.append(
            f"CASE WHEN json_type({raw}) = 'NULL' THEN NULL ELSE {kept} END AS {ident(c.name)}"
        )
        if c.type.upper() != "JSON":
            nulled.append(f"json_type(_ferry_j[{i}]) <> 'NULL' AND {ident(c.name)} IS NULL")
    return typed, nulled


def _from_text(raw: str, type_: str) -> str:
    if type_.upper() == "VARCHAR":
        return raw
    if type_.upper() in INTEGER_TYPES:
        # TRY_CAST alone would round 12.5 to 13: accept only integral values.
        return (
            f"CASE WHEN TRY_CAST({raw} AS DOUBLE) = TRY_CAST({raw} AS {type_})"
            f" THEN TRY_CAST({raw} AS {type_}) END"
        )
    return f"TRY_CAST({raw} AS {type_})"


# ------------------------------------------------------------------------------------------------
# One stream's table
# ------------------------------------------------------------------------------------------------


@dataclass
class StreamTable:
    configured: ConfiguredAirbyteStream
    schema: str
    table: str
    columns: list[Column]
    lines: list[bytes] = field(default_factory=list)  # buffered record lines
    records_since_state: int = 0
    records_total: int = 0
    cleared: bool = False  # append modes: older generations deleted (the stream is COMPLETE)
    staged: bool = False  # overwrite: this run's staging table exists
    completed: bool = False  # overwrite: the staging table has replaced the table
    abandoned: bool = False  # overwrite: the stream ended INCOMPLETE; the table stays as it was

    @property
    def mode(self) -> str:
        return self.configured.destination_sync_mode

    @property
    def qualified(self) -> str:
        return f"{ident(self.schema)}.{ident(self.table)}"

    @property
    def staging(self) -> str:
        return f"{ident(self.schema)}.{ident(STAGING_PREFIX + self.table)}"

    @property
    def target(self) -> str:
        """Where records go: an overwrite writes to its staging table until it is complete."""
        return self.staging if self.mode == OVERWRITE and not self.completed else self.qualified

    @property
    def generation(self) -> int | None:
        return self.configured.generation_id

    def path_expr(self, path: list[str], alias: str) -> str:
        """SQL for a primary-key or cursor path: a column, or a field inside a JSON column."""
        by_field = {c.field: c for c in self.columns}
        column = by_field.get(path[0]) if path else None
        where = f"stream {self.configured.stream.name!r}"
        if column is None:
            raise ConfigError(f"{where}: field {path!r} is not a property of the stream's schema")
        expr = f"{alias}.{ident(column.name)}"
        if len(path) == 1:
            return expr
        if column.type != "JSON":
            raise ConfigError(
                f"{where}: {path!r} goes inside {column.field!r}, which is not an object"
            )
        return f"json_extract_string({expr}, {literal(json_pointer(path[1:]))})"

    def select_sql(self, source: str, ordinal: bool) -> str:
        """SELECT producing the table's rows (and _ferry_ord when asked) from message lines.

        `source` yields `l`, a whole message line (and `o`, its arrival ordinal). The line is
        parsed once for the text of every scalar column plus emitted_at, once more for the
        columns kept as JSON (if any).
        """
        text_cols = [c for c in self.columns if is_text_cast(c.type) and c.name != DATA]
        json_cols = [c for c in self.columns if not is_text_cast(c.type) and c.name != DATA]
        has_data = any(c.name == DATA for c in self.columns)
        inner = _parse_sql(text_cols, json_cols, ordinal=ordinal, data=has_data)
        typed, nulled = _typed_sql(text_cols, json_cols)
        if has_data:
            typed.append(f"CASE WHEN json_type(d) = 'NULL' THEN NULL ELSE d END AS {ident(DATA)}")
        if ordinal:
            typed.append(f"o AS {ident(ORDINAL)}")
        typed.append(f"s[{len(text_cols) + 1}] AS _ferry_e, s AS _ferry_s")  # emitted_at: last
        if json_cols:
            typed.append("j AS _ferry_j")
        outer = [ident(c.name) for c in self.columns]
        if ordinal:
            outer.append(ident(ORDINAL))
        outer.append(f"uuid() AS {ident(RAW_ID)}")
        outer.append(
            "make_timestamptz(CAST(round(TRY_CAST(_ferry_e AS DOUBLE) * 1000) AS BIGINT))"
            f" AS {ident(EXTRACTED_AT)}"
        )
        outer.append(f"{self._meta_sql(text_cols, json_cols, nulled)} AS {ident(META)}")
        generation = "NULL" if self.generation is None else str(int(self.generation))
        outer.append(f"CAST({generation} AS BIGINT) AS {ident(GENERATION)}")
        return (
            f"SELECT {', '.join(outer)} FROM ("
            f"SELECT {', '.join(typed)} FROM ("
            f"SELECT {', '.join(inner)} FROM {source}))"
        )

    def _meta_sql(self, text_cols: list[Column], json_cols: list[Column], nulled: list[str]) -> str:
        castable = [c for c in text_cols if c.type.upper() != "VARCHAR"] + [
            c for c in json_cols if c.type.upper() != "JSON"
        ]
        if not castable:
            return "CAST(NULL AS JSON)"
        changes = []
        for c, condition in zip(castable, nulled, strict=True):
            change = json.dumps(
                {"field": c.field, "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR"},
                separators=(",", ":"),
            )
            changes.append(f"CASE WHEN {condition} THEN {literal(change)} END")
        any_nulled = " OR ".join(f"({n})" for n in nulled)
        return (
            f"CASE WHEN {any_nulled} THEN CAST('{{\"changes\":[' || concat_ws(',', "
            f"{', '.join(changes)}) || ']}}' AS JSON) END"
        )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns] + [name for name, _ in METADATA_COLUMNS]

    def create_sql(self, staging: bool = False) -> str:
        """The table, or its staging table (replacing a leftover of a crashed run)."""
        columns = [f"{ident(c.name)} {c.type}" for c in self.columns]
        columns += [f"{ident(name)} {sql_type}" for name, sql_type in METADATA_COLUMNS]
        if staging:
            return f"CREATE OR REPLACE TABLE {self.staging} ({', '.join(columns)})"
        return f"CREATE TABLE IF NOT EXISTS {self.qualified} ({', '.join(columns)})"


# ------------------------------------------------------------------------------------------------
# The writer
# ------------------------------------------------------------------------------------------------


def connect(path: str) -> duckdb.DuckDBPyConnection:
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(Path(path).expanduser()))
    con.execute("SET TimeZone = 'UTC'")
    return con


class Writer:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: dict[str, Any],
        catalog: ConfiguredAirbyteCatalog,
        workdir: Path,
        output: Callable[[bytes], None] = _io.write_line,  # state echoes and LOG lines: stdout
    ) -> None:
        self.con = con
        self.output = output
        self.workdir = workdir
        self.default_schema: str = config.get("schema", "main")
        self.tables: dict[tuple[str | None, str], StreamTable] = {}
        self.by_name: dict[str, list[StreamTable]] = {}
        self.records_since_state = 0
        self.received = False  # any record, state or stream status read
        self.statuses_seen = False  # the orchestrator sends STREAM_STATUS (see _finish_streams)
        # An orchestrator that sets generations says when a stream is complete (see _finish_streams).
        self.generations_set = any(c.generation_id is not None for c in catalog.streams)
        self.ignored = 0
        self.batch_file = workdir / "batch.ndjson"
        for configured in catalog.streams:
            stream = configured.stream
            mode = configured.destination_sync_mode
            if mode not in (APPEND, APPEND_DEDUP, OVERWRITE):
                raise ConfigError(
                    f"stream {stream.name!r}: unsupported destination_sync_mode {mode!r}"
                )
            table = StreamTable(
                configured=configured,
                schema=stream.namespace or self.default_schema,
                table=configured.destination_object_name or stream.name,
                columns=plan_columns(stream.json_schema),
            )
            if table.table.lower().startswith(STAGING_PREFIX):
                raise ConfigError(
                    f"stream {stream.name!r}: table names starting with {STAGING_PREFIX!r} are"
                    " reserved for destination-duckdb's staging tables"
                )
            key = (stream.namespace, stream.name)
            if key in self.tables:
                raise ConfigError(f"stream {stream.name!r} is configured twice")
            self.tables[key] = table
            self.by_name.setdefault(stream.name, []).append(table)
        self._check_keys()

    def _check_keys(self) -> None:
        for table in self.tables.values():
            if table.mode != APPEND_DEDUP:
                continue
            if not table.configured.primary_key:
                raise ConfigError(
                    f"stream {table.configured.stream.name!r}: append_dedup needs a primary_key"
                )
            for path in table.configured.primary_key:
                table.path_expr(path, "t")
            if table.configured.cursor_field:
                table.path_expr(table.configured.cursor_field, "t")

    # -- tables ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create schemas and tables, add missing columns, learn existing column types."""
        self.con.execute("BEGIN")
        for schema in sorted({t.schema for t in self.tables.values()}):
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
        for table in self.tables.values():
            existing = self._existing_columns(table)
            if not existing:
                self.con.execute(table.create_sql())
                continue
            if table.mode == OVERWRITE and table.generation is None:
                continue  # replaced by its staging table, with the planned columns
            self._adopt(table, existing)
        self.con.execute("COMMIT")

    def _existing_columns(self, table: StreamTable) -> dict[str, tuple[str, str]]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?)"
            " ORDER BY ordinal_position",
            [table.schema, table.table],
        ).fetchall()
        return {str(name).lower(): (str(name), str(sql_type)) for name, sql_type in rows}

    def _adopt(self, table: StreamTable, existing: dict[str, tuple[str, str]]) -> None:
        """Use an existing table: add the columns it lacks, keep the types of those it has."""
        wanted = [(c.name, c.type) for c in table.columns] + list(METADATA_COLUMNS)
        for name, sql_type in wanted:
            if name.lower() not in existing:
                self.con.execute(
                    f"ALTER TABLE {table.qualified} ADD COLUMN {ident(name)} {sql_type}"
                )
                existing[name.lower()] = (name, sql_type)
        for column in table.columns:
            actual_name, actual_type = existing[column.name.lower()]
            if not same_type(actual_type, column.type):
                self.log(
                    f"{table.qualified}.{ident(actual_name)} is {actual_type} in the existing table"
                    f" (the stream's schema says {column.type}); values are cast to {actual_type}",
                    "WARN",
                )
            column.name, column.type = actual_name, actual_type

    # -- overwrite: staging table, then an atomic swap --------------------------------------------

    def _stage(self, table: StreamTable) -> None:
        """Create the stream's staging table (once per run; a crashed run's leftover is replaced)."""
        if not table.staged and not table.completed:
            self.con.execute(table.create_sql(staging=True))
            table.staged = True

    def _complete(self, table: StreamTable) -> None:
        """The stream's data is complete: swap its staging table in and commit at once."""
        if table.completed or table.abandoned:
            return  # after an INCOMPLETE, the staging table no longer holds the whole stream
        self._stage(table)  # no record: the table becomes empty, as an overwrite means
        self._flush()
        self._swap(table)
        self._commit()
        self.con.execute("BEGIN")

    def _swap(self, table: StreamTable) -> None:
        """Replace the table with the staging table, inside the open transaction.

        DROP + RENAME: DuckDB's catalog changes are transactional, so until COMMIT the old table
        is what readers and a crash see, and no row is copied (delete + insert would copy the
        whole stream once more).
        """
        if table.generation is not None:
            self._keep_generation(table)
        self.con.execute(f"DROP TABLE IF EXISTS {table.qualified}")
        self.con.execute(f"ALTER TABLE {table.staging} RENAME TO {ident(table.table)}")
        table.staged, table.completed = False, True

    def _keep_generation(self, table: StreamTable) -> None:
        """Rows an earlier attempt of this generation left in the table stay (a retry resumes).

        The table was adopted in `prepare`, so it has every column of the staging table.
        """
        columns = ", ".join(map(ident, table.column_names))
        self.con.execute(
            f"INSERT INTO {table.staging} ({columns}) SELECT {columns} FROM {table.qualified}"
            f" WHERE {ident(GENERATION)} = ?",
            [table.generation],
        )

    def _abandon(self, table: StreamTable, why: str) -> None:
        """The stream will not be complete: drop its staging table, keep the table as it was."""
        if table.completed:
            return
        table.lines = []
        if table.staged:
            self.con.execute(f"DROP TABLE IF EXISTS {table.staging}")
            table.staged = False
        if not table.abandoned:
            table.abandoned = True
            self.log(
                f"{table.qualified}: {why}; the overwrite was abandoned and the table keeps its"
                " previous contents",
                "WARN",
            )

    def _drop_old_generations(self, table: StreamTable) -> None:
        minimum = table.configured.minimum_generation_id
        if minimum:
            self.con.execute(
                f"DELETE FROM {table.qualified} WHERE {ident(GENERATION)} IS NULL"
                f" OR {ident(GENERATION)} < ?",
                [minimum],
            )

    # -- input -----------------------------------------------------------------------------------

    def run(self, lines: Iterator[bytes]) -> None:
        self.con.execute("BEGIN")
        try:
            self._consume(lines)
            if self.received:
                self._flush()
                self._finish_streams()
                self._commit()
            else:
                self.log("no input: nothing was written")
                self.con.execute("ROLLBACK")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")

    def _consume(self, lines: Iterator[bytes]) -> None:
        """The hot loop: route each record line to its table's buffer, commit at each state.

        Only the envelope is decoded (msgspec, ~0.5 µs); counts and sizes are settled per batch.
        """
        tables = self.tables
        buffered = 0
        for line in lines:
            try:
                envelope = decode_envelope(line)
            except DecodeError:
                if not line.isspace():
                    self.ignored += 1
                continue
            kind = envelope.type
            record = envelope.record
            if kind == RECORD and record is not None:
                table = tables.get((record.namespace, record.stream)) or self._table_for(
                    record.stream, record.namespace
                )
                table.lines.append(line)
                buffered += len(line)
                if buffered >= FLUSH_BYTES:
                    self._flush()
                    buffered = 0
                self.received = True
            elif kind == STATE:
                self.received = True
                self._commit()
                buffered = 0
                self._echo(line)
                self.con.execute("BEGIN")
            elif kind == TRACE and self._on_trace(line):
                buffered = 0

    def _on_trace(self, line: bytes) -> bool:
        """Act on a STREAM_STATUS (other traces are ignored); True when it flushed the buffers."""
        try:
            status = stream_status_of(decode_message(line))
        except DecodeError:
            self.ignored += 1
            return False
        if status is None:
            return False
        self.received = self.statuses_seen = True
        descriptor = status.stream_descriptor
        table = self._find_table(descriptor.name, descriptor.namespace)
        if table is None:
            return False
        if table.mode != OVERWRITE:
            if status.status == STREAM_COMPLETE and not table.cleared:
                self._flush()
                table.cleared = True
                self._drop_old_generations(table)
                self._commit()
                self.con.execute("BEGIN")
                return True
            return False
        if status.status == STREAM_COMPLETE:
            self._complete(table)
            return True
        if status.status == STREAM_INCOMPLETE:
            self._abandon(table, "the stream ended INCOMPLETE")
        else:  # STARTED, RUNNING
            self._stage(table)
        return False

    def _find_table(self, name: str, namespace: str | None) -> StreamTable | None:
        table = self.tables.get((namespace, name))
        if table is None:
            candidates = self.by_name.get(name, [])
            if len(candidates) == 1 and (
                namespace is None or candidates[0].configured.stream.namespace is None
            ):
                table = candidates[0]
        return table

    def _table_for(self, name: str, namespace: str | None) -> StreamTable:
        table = self._find_table(name, namespace)
        if table is None:
            shown = f"{namespace}.{name}" if namespace else name
            configured = ", ".join(sorted(t.configured.stream.name for t in self.tables.values()))
            raise _io.ConnectorError(
                f"a record of stream {shown!r}, which is not in the configured catalog"
                f" (streams: {configured or 'none'})"
            )
        return table

    # -- writing ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        for table in self.tables.values():
            if table.lines:
                self._write(table)

    def _write(self, table: StreamTable) -> None:
        lines = table.lines
        if not lines[-1].endswith(b"\n"):  # only the input's last line can lack it
            lines[-1] += b"\n"
        count = len(lines)
        table.records_since_state += count
        table.records_total += count
        self.records_since_state += count
        longest = max(map(len, lines))
        if table.mode == OVERWRITE:
            self._stage(table)
        dedup = table.mode == APPEND_DEDUP
        # The batch is read back as CSV with one column per line (no quote, no escape, a
        # delimiter that valid JSON never contains raw), which DuckDB splits far faster than
        # read_json parses (read_json also costs ~50 ms per call): the JSON is parsed once,
        # by json_extract_string, in select_sql.
        with open(self.batch_file, "wb") as batch:
            if dedup:
                # Each line prefixed with its arrival ordinal: cursor ties go to the later one.
                batch.write(b"".join([b"%d\x01%s" % item for item in enumerate(table.lines)]))
            else:
                batch.write(b"".join(table.lines))
        size = max(DEFAULT_MAX_LINE, longest + 1024)
        columns = "{'o': 'BIGINT', 'l': 'VARCHAR'}" if dedup else "{'l': 'VARCHAR'}"
        source = (
            f"read_csv({literal(str(self.batch_file))}, columns = {columns}, header = false,"
            " delim = chr(1), quote = '', escape = '', auto_detect = false,"
            f" max_line_size = {size}, buffer_size = {max(size * 2, DEFAULT_BUFFER)})"
        )
        if dedup:
            self._merge(table, source)
        else:
            self.con.execute(
                f"INSERT INTO {table.target} BY NAME {table.select_sql(source, False)}"
            )
        table.lines = []

    def _merge(self, table: StreamTable, source: str) -> None:
        """append_dedup: keep, per key, the latest cursor (ties: the latest arrival)."""
        pk = table.configured.primary_key or []
        cursor = table.configured.cursor_field or []
        stage = ident("_ferry_stage")
        keys_s = [table.path_expr(p, "s") for p in pk]
        keys_t = [table.path_expr(p, "t") for p in pk]
        order = [f"{table.path_expr(cursor, 'b')} DESC NULLS LAST"] if cursor else []
        order.append(f"b.{ident(ORDINAL)} DESC")
        partition = ", ".join(table.path_expr(p, "b") for p in pk)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT * FROM ({table.select_sql(source, True)}) b"
            f" QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {', '.join(order)}) = 1"
        )
        same_key = " AND ".join(
            f"{a} IS NOT DISTINCT FROM {b}" for a, b in zip(keys_t, keys_s, strict=True)
        )
        if cursor:
            c_t, c_s = table.path_expr(cursor, "t"), table.path_expr(cursor, "s")
            # An existing row wins only with a strictly greater cursor (or a non-NULL against NULL).
            self.con.execute(
                f"DELETE FROM {stage} s USING {table.qualified} t WHERE {same_key}"
                f" AND {c_t} IS NOT NULL AND ({c_s} IS NULL OR {c_t} > {c_s})"
            )
        self.con.execute(f"DELETE FROM {table.qualified} t USING {stage} s WHERE {same_key}")
        self.con.execute(
            f"INSERT INTO {table.qualified} BY NAME SELECT * EXCLUDE ({ident(ORDINAL)}) FROM {stage}"
        )
        self.con.execute(f"DROP TABLE {stage}")

    def _commit(self) -> None:
        self._flush()
        self.con.execute("COMMIT")

    def _finish_streams(self) -> None:
        """At the end of the input: every overwrite that is not complete yet ends now.

        An orchestrator that sets generation ids or sends any STREAM_STATUS says when a stream is
        complete: one that is not has failed. Without either, the end of the input is all there
        is to go by.
        """
        for table in self.tables.values():
            if table.mode != OVERWRITE or table.completed:
                continue
            if self.statuses_seen or self.generations_set:
                self._abandon(table, "the input ended before the stream was COMPLETE")
            else:
                self._stage(table)
                self._swap(table)

    # -- echo ------------------------------------------------------------------------------------

    def _echo(self, line: bytes) -> None:
        """Echo a committed state, with destinationStats added (or unchanged if that fails)."""
        try:
            message = msgspec.json.decode(line)
        except msgspec.DecodeError:  # decoded once already, but be safe: echo it as it came
            message = None
        state = message.get("state") if isinstance(message, dict) else None
        if isinstance(state, dict):
            state["destinationStats"] = {"recordCount": float(self._count_for(state))}
            line = msgspec.json.encode(message)
        else:
            self._count_for({})  # still reset the counters
        self.output(line.rstrip(b"\r\n") + b"\n")

    def log(self, message: str, level: str = "INFO") -> None:
        self.output(_io.log_line(message, level))

    def _count_for(self, state: dict[str, Any]) -> int:
        """Records covered by this state, as ferry counts them; resets the counters."""
        counted = self.records_since_state
        if state.get("type") == STATE_STREAM:
            descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
            table = self.tables.get((descriptor.get("namespace"), str(descriptor.get("name"))))
            if table is None:
                candidates = self.by_name.get(str(descriptor.get("name")), [])
                table = candidates[0] if len(candidates) == 1 else None
            counted = table.records_since_state if table else 0
            if table:
                table.records_since_state = 0
        else:
            for table in self.tables.values():
                table.records_since_state = 0
        self.records_since_state = 0
        return counted

    def summary(self) -> None:
        for table in self.tables.values():
            nulled = self.con.execute(
                f"SELECT count(*) FROM {table.qualified} WHERE {ident(META)} IS NOT NULL"
            ).fetchone()
            changed = int(nulled[0]) if nulled else 0
            text = f"{table.qualified}: {table.records_total} records written"
            if table.abandoned:
                text = f"{table.qualified}: {table.records_total} records staged and dropped"
            if changed:
                text += f"; {changed} rows have values set to NULL that did not fit (see {META})"
            self.log(text, "WARN" if changed else "INFO")
        if self.ignored:
            self.log(f"{self.ignored} input lines were not JSON messages and were ignored", "WARN")


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def check(config: dict[str, Any]) -> str | None:
    """None when the database can be opened and written, else why not."""
    path = config["path"]
    try:
        con = connect(path)
    except (duckdb.Error, OSError) as e:
        return f"cannot open the DuckDB database {path!r}: {e}"
    try:
        schema = ident(config.get("schema", "main"))
        probe = f"{schema}.{ident('_ferry_check_' + uuid.uuid4().hex)}"
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE {probe} (x INTEGER)")
        con.execute(f"INSERT INTO {probe} VALUES (1)")
        con.execute(f"DROP TABLE {probe}")
    except (duckdb.Error, OSError) as e:
        return f"cannot write to the DuckDB database {path!r}: {e}"
    finally:
        con.close()
    return None


def write(args: _io.Args) -> int:
    config = _io.load_config(args.config, CONNECTION_SPECIFICATION)
    catalog = _io.load_catalog(args.catalog)
    try:
        con = connect(config["path"])
    except (duckdb.Error, OSError) as e:
        raise ConfigError(f"cannot open the DuckDB database {config['path']!r}: {e}") from None
    # Batch files hold records: they live where ferry sweeps what a killed process left
    # ($FERRY_HOME/run), and go on any exit that can be caught (a stop signal included).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        workdir = make_run_dir("duckdb")
    except OSError:  # no writable FERRY_HOME (a read-only container): the system's temp dir
        workdir = Path(tempfile.mkdtemp(prefix="ferry-duckdb-"))
    try:
        writer = Writer(con, config, catalog, workdir)
        writer.prepare()
        with open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False) as stdin:
            writer.run(iter(stdin))
        writer.summary()
    except Exception:
        # A signal caught while DuckDB runs a query surfaces as the query's own error
        # ("Query interrupted"): the stop, not that error, is why the process ends.
        if _stop_signal:
            raise SystemExit(128 + _stop_signal[0]) from None
        raise
    finally:
        con.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


_stop_signal: list[int] = []


def _exit_on_signal(signum: int, frame: object) -> None:
    _stop_signal.append(signum)
    raise SystemExit(128 + signum)  # unwinds through the cleanup above


def main() -> None:
    sys.exit(_io.run_destination(PROG, CONNECTION_SPECIFICATION, write, check))


if __name__ == "__main__":
    main()
