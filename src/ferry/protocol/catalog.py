"""Building a configured catalog from a discovered one, and its generations (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import msgspec

from ferry.errors import ConfigError
from ferry.protocol.messages import (
    APPEND,
    APPEND_DEDUP,
    FULL_REFRESH,
    INCREMENTAL,
    OVERWRITE,
    SOFT_DELETE,
    UPDATE,
    AirbyteCatalog,
    AirbyteStream,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
    DestinationCatalog,
    StreamDescriptor,
)

PLAIN_DESTINATION_SYNC_MODES = frozenset({APPEND, OVERWRITE, APPEND_DEDUP})
# Offered by destinations that describe their objects in a DESTINATION_CATALOG.
OPERATION_SYNC_MODES = frozenset({UPDATE, SOFT_DELETE})
DESTINATION_SYNC_MODES = PLAIN_DESTINATION_SYNC_MODES | OPERATION_SYNC_MODES


class StreamSelection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a user asked for one stream (a connection file's `streams:` entry, read strictly);
    None means "the best the catalog allows"."""

    name: str
    namespace: str | None = None
    sync_mode: str | None = None
    destination_sync_mode: str | None = None
    cursor_field: list[str] | None = None
    primary_key: list[list[str]] | None = None
    destination_object_name: str | None = None


def default_modes(stream: AirbyteStream) -> tuple[str, str]:
    """Incremental + append_dedup where cursor and key are source-defined, else a full refresh."""
    incremental = INCREMENTAL in stream.supported_sync_modes
    if incremental and stream.source_defined_cursor and stream.source_defined_primary_key:
        return INCREMENTAL, APPEND_DEDUP
    if FULL_REFRESH in stream.supported_sync_modes or not incremental:
        return FULL_REFRESH, OVERWRITE
    return INCREMENTAL, APPEND


def configure_stream(stream: AirbyteStream, selection: StreamSelection) -> ConfiguredAirbyteStream:
    default_sync, default_destination = default_modes(stream)
    sync_mode = selection.sync_mode or default_sync
    destination_sync_mode = selection.destination_sync_mode or (
        default_destination if selection.sync_mode in (None, default_sync) else _natural(sync_mode)
    )
    where = f"stream {stream.name!r}"
    if sync_mode not in stream.supported_sync_modes:
        raise ConfigError(
            f"{where}: sync_mode {sync_mode!r} is not supported; "
            f"the source allows {', '.join(stream.supported_sync_modes)}"
        )
    if destination_sync_mode not in DESTINATION_SYNC_MODES:
        raise ConfigError(
            f"{where}: destination_sync_mode {destination_sync_mode!r} is not one of "
            f"{', '.join(sorted(DESTINATION_SYNC_MODES))}"
        )
    cursor_field = selection.cursor_field or stream.default_cursor_field or None
    if sync_mode == INCREMENTAL and not cursor_field and not stream.source_defined_cursor:
        raise ConfigError(
            f"{where}: incremental sync needs a cursor_field; the source defines none"
        )
    primary_key = selection.primary_key or stream.source_defined_primary_key or None
    if destination_sync_mode == APPEND_DEDUP and not primary_key:
        raise ConfigError(
            f"{where}: append_dedup needs a primary key; the source defines none, set primary_key"
        )
    return ConfiguredAirbyteStream(
        stream=stream,
        sync_mode=sync_mode,
        destination_sync_mode=destination_sync_mode,
        cursor_field=cursor_field,
        primary_key=primary_key,
        destination_object_name=selection.destination_object_name,
    )


def needs_destination_catalog(catalog: ConfiguredAirbyteCatalog) -> bool:
    """Whether a stream names a destination object or an operation-only mode."""
    return any(
        c.destination_object_name is not None or c.destination_sync_mode in OPERATION_SYNC_MODES
        for c in catalog.streams
    )


def check_destination_operations(
    catalog: ConfiguredAirbyteCatalog, offered: DestinationCatalog | None, why_none: str = ""
) -> None:
    """ConfigError unless every stream's destination object and mode is an offered operation.

    `offered` is None when the destination has no DESTINATION_CATALOG (`why_none` says why):
    then only the plain modes, without an object name, are allowed.
    """
    operations = {(o.object_name, o.sync_mode) for o in offered.operations} if offered else set()
    for configured in catalog.streams:
        name, mode = configured.destination_object_name, configured.destination_sync_mode
        if name is None and mode not in OPERATION_SYNC_MODES:
            continue
        where = f"stream {_label(configured.stream.name, configured.stream.namespace)}"
        if offered is None:
            what = (
                f"destination_object_name {name!r}" if name else f"destination_sync_mode {mode!r}"
            )
            raise ConfigError(
                f"{where}: {what} needs a destination that lists its objects and modes in a "
                f"DESTINATION_CATALOG, and this one does not ({why_none or 'no catalog'}); "
                f"use {', '.join(sorted(PLAIN_DESTINATION_SYNC_MODES))} without an object name"
            )
        if name is None:
            raise ConfigError(
                f"{where}: destination_sync_mode {mode!r} needs destination_object_name"
            )
        if (name, mode) not in operations:
            modes = sorted(m for n, m in operations if n == name)
            offers = (
                f"it offers {name!r} with {', '.join(modes)}"
                if modes
                else f"its objects are {', '.join(sorted({n for n, _ in operations})) or 'none'}"
            )
            raise ConfigError(
                f"{where}: the destination offers no {mode!r} operation on {name!r}; {offers}"
            )


def _natural(sync_mode: str) -> str:
    return APPEND if sync_mode == INCREMENTAL else OVERWRITE


def configure_catalog(
    catalog: AirbyteCatalog,
    selections: list[StreamSelection] | None = None,
    *,
    full_refresh: bool = False,
) -> ConfiguredAirbyteCatalog:
    """Every stream with default modes, or exactly the selected ones; full_refresh forces it."""
    if selections is None:
        selections = [StreamSelection(name=s.name, namespace=s.namespace) for s in catalog.streams]
    configured = []
    chosen: set[tuple[str, str | None]] = set()
    for selection in selections:
        stream = _find(catalog, selection)
        if (stream.name, stream.namespace) in chosen:
            raise ConfigError(f"stream {_label(stream.name, stream.namespace)} is selected twice")
        chosen.add((stream.name, stream.namespace))
        if full_refresh and FULL_REFRESH in stream.supported_sync_modes:
            selection = StreamSelection(
                name=selection.name,
                namespace=selection.namespace,
                sync_mode=FULL_REFRESH,
                destination_sync_mode=OVERWRITE,
            )
        configured.append(configure_stream(stream, selection))
    return ConfiguredAirbyteCatalog(streams=configured)


def _label(name: str, namespace: str | None) -> str:
    return repr(name) if namespace is None else repr(f"{namespace}.{name}")


def _find(catalog: AirbyteCatalog, selection: StreamSelection) -> AirbyteStream:
    """The stream a selection names; without a namespace, a name alone must be unambiguous."""
    for stream in catalog.streams:
        if (stream.name, stream.namespace) == (selection.name, selection.namespace):
            return stream
    named = [s for s in catalog.streams if s.name == selection.name]
    if selection.namespace is None and len(named) == 1:
        return named[0]
    if selection.namespace is None and named:
        spaces = ", ".join(sorted(repr(s.namespace) for s in named))
        raise ConfigError(
            f"stream {selection.name!r} exists in several namespaces ({spaces}): set namespace"
        )
    known = ", ".join(sorted({_label(s.name, s.namespace) for s in catalog.streams})) or "none"
    wanted = _label(selection.name, selection.namespace)
    raise ConfigError(f"stream {wanted} is not in the catalog (streams: {known})")


def stream_descriptor(configured: ConfiguredAirbyteStream) -> StreamDescriptor:
    return StreamDescriptor(configured.stream.name, configured.stream.namespace)


def select_streams(
    catalog: ConfiguredAirbyteCatalog, names: Sequence[str]
) -> list[StreamDescriptor]:
    """The configured streams `names` name (NAME or NAMESPACE.NAME); every stream when none.

    A ConfigError names every name that is not a configured stream.
    """
    streams = [stream_descriptor(c) for c in catalog.streams]
    if not names:
        return streams
    chosen: list[StreamDescriptor] = []
    unknown = []
    for name in names:
        matches = [s for s in streams if name in (s.name, f"{s.namespace}.{s.name}")]
        if not matches:
            unknown.append(name)
        chosen += [s for s in matches if s not in chosen]
    if unknown:
        known = ", ".join(sorted(_label(s.name, s.namespace) for s in streams)) or "none"
        raise ConfigError(
            f"not a stream of this connection: {', '.join(map(repr, unknown))} (streams: {known})"
        )
    return chosen


def truncates_on_sync(configured: ConfiguredAirbyteStream) -> bool:
    """A full refresh into overwrite replaces the stream's data: each sync is a new generation."""
    return configured.sync_mode == FULL_REFRESH and configured.destination_sync_mode == OVERWRITE


def with_generations(
    catalog: ConfiguredAirbyteCatalog,
    sync_id: int,
    generations: Mapping[StreamDescriptor, int],
    truncate: Collection[StreamDescriptor] = (),
) -> ConfiguredAirbyteCatalog:
    """The catalog with `sync_id`, `generation_id` and `minimum_generation_id` on every stream.

    As Airbyte's platform sets them (CatalogGenerationSetter): the stream's current generation
    (0 if it has none); the minimum is that generation for a full refresh into overwrite and
    for the streams in `truncate` (a truncate refresh, a clear), so the destination drops older
    generations once the stream is complete; otherwise 0, which keeps every generation.
    """
    streams = []
    for configured in catalog.streams:
        descriptor = stream_descriptor(configured)
        generation = generations.get(descriptor, 0)
        truncating = descriptor in truncate or truncates_on_sync(configured)
        streams.append(
            msgspec.structs.replace(
                configured,
                sync_id=sync_id,
                generation_id=generation,
                minimum_generation_id=generation if truncating else 0,
            )
        )
    return ConfiguredAirbyteCatalog(streams=streams)
