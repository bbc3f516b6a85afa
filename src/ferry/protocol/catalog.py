"""Building a configured catalog from a discovered one (pure)."""

from __future__ import annotations

import msgspec

from ferry.errors import ConfigError
from ferry.protocol.messages import (
    APPEND,
    APPEND_DEDUP,
    FULL_REFRESH,
    INCREMENTAL,
    OVERWRITE,
    AirbyteCatalog,
    AirbyteStream,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
)

DESTINATION_SYNC_MODES = frozenset({APPEND, OVERWRITE, APPEND_DEDUP})


class StreamSelection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a user asked for one stream (a connection file's `streams:` entry, read strictly);
    None means "the best the catalog allows"."""

    name: str
    namespace: str | None = None
    sync_mode: str | None = None
    destination_sync_mode: str | None = None
    cursor_field: list[str] | None = None
    primary_key: list[list[str]] | None = None


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
