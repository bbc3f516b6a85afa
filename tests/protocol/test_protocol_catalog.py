"""Configured catalogs from discovered ones: default modes, selections, errors, full refresh."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.errors import ConfigError
from ferry.protocol import StreamSelection, configure_catalog, convert, default_modes, to_builtins
from ferry.protocol.catalog import select_streams, with_generations
from ferry.protocol.messages import (
    AirbyteCatalog,
    AirbyteStream,
    ConfiguredAirbyteStream,
    StreamDescriptor,
)


def stream(
    name: str,
    modes: tuple[str, ...] = ("full_refresh", "incremental"),
    *,
    cursor: bool | None = None,
    default_cursor: list[str] | None = None,
    pk: list[list[str]] | None = None,
    namespace: str | None = None,
) -> AirbyteStream:
    return AirbyteStream(
        name=name,
        json_schema={"type": "object"},
        supported_sync_modes=list(modes),
        source_defined_cursor=cursor,
        default_cursor_field=default_cursor,
        source_defined_primary_key=pk,
        namespace=namespace,
    )


CDC = stream("cdc", cursor=True, default_cursor=["_ab_cdc_lsn"], pk=[["id"]])
CURSOR_NO_PK = stream("events", cursor=True, default_cursor=["ts"])
PLAIN = stream("plain", ("full_refresh",))
USER_CURSOR = stream("orders", default_cursor=["updated_at"])
INCREMENTAL_ONLY = stream("log", ("incremental",), cursor=True, default_cursor=["seq"])
CATALOG = AirbyteCatalog(streams=[CDC, CURSOR_NO_PK, PLAIN, USER_CURSOR, INCREMENTAL_ONLY])


def modes(configured: ConfiguredAirbyteStream) -> tuple[str, str]:
    return configured.sync_mode, configured.destination_sync_mode


def by_name(selections: list[StreamSelection] | None = None, **kwargs: Any) -> dict[str, Any]:
    catalog = configure_catalog(CATALOG, selections, **kwargs)
    return {s.stream.name: s for s in catalog.streams}


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (CDC, ("incremental", "append_dedup")),
        (CURSOR_NO_PK, ("full_refresh", "overwrite")),
        (stream("pk_no_cursor", pk=[["id"]]), ("full_refresh", "overwrite")),
        (PLAIN, ("full_refresh", "overwrite")),
        (USER_CURSOR, ("full_refresh", "overwrite")),
        (INCREMENTAL_ONLY, ("incremental", "append")),
        (
            stream("cdc_only", ("incremental",), cursor=True, pk=[["id"]]),
            ("incremental", "append_dedup"),
        ),
    ],
)
def test_default_modes(s: AirbyteStream, expected: tuple[str, str]) -> None:
    assert default_modes(s) == expected


def test_every_stream_with_default_modes() -> None:
    configured = by_name()
    assert list(configured) == ["cdc", "events", "plain", "orders", "log"]
    assert {n: modes(c) for n, c in configured.items()} == {
        "cdc": ("incremental", "append_dedup"),
        "events": ("full_refresh", "overwrite"),
        "plain": ("full_refresh", "overwrite"),
        "orders": ("full_refresh", "overwrite"),
        "log": ("incremental", "append"),
    }
    cdc = configured["cdc"]
    assert cdc.cursor_field == ["_ab_cdc_lsn"]
    assert cdc.primary_key == [["id"]]
    assert cdc.stream == CDC


def test_explicit_selections_only_those_streams() -> None:
    configured = by_name(
        [
            StreamSelection("orders", sync_mode="incremental"),
            StreamSelection("cdc", sync_mode="full_refresh"),
            StreamSelection(
                "events",
                sync_mode="incremental",
                destination_sync_mode="append_dedup",
                primary_key=[["event_id"]],
            ),
            StreamSelection("plain", destination_sync_mode="append"),
        ]
    )
    assert list(configured) == ["orders", "cdc", "events", "plain"]
    assert modes(configured["orders"]) == ("incremental", "append")
    assert configured["orders"].cursor_field == ["updated_at"]
    assert modes(configured["cdc"]) == ("full_refresh", "overwrite")
    assert modes(configured["events"]) == ("incremental", "append_dedup")
    assert configured["events"].primary_key == [["event_id"]]
    assert modes(configured["plain"]) == ("full_refresh", "append")


def test_a_selection_of_the_default_sync_mode_keeps_the_default_destination_mode() -> None:
    assert modes(by_name([StreamSelection("cdc", sync_mode="incremental")])["cdc"]) == (
        "incremental",
        "append_dedup",
    )


def test_user_cursor_and_primary_key_win() -> None:
    configured = by_name(
        [
            StreamSelection(
                "orders",
                sync_mode="incremental",
                destination_sync_mode="append_dedup",
                cursor_field=["modified"],
                primary_key=[["tenant"], ["id"]],
            )
        ]
    )["orders"]
    assert configured.cursor_field == ["modified"]
    assert configured.primary_key == [["tenant"], ["id"]]


def test_unknown_stream_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        configure_catalog(CATALOG, [StreamSelection("userz")])
    message = str(caught.value)
    assert "'userz'" in message
    for name in ("cdc", "events", "plain", "orders", "log"):
        assert name in message
    assert caught.value.exit_code == 2


def test_unsupported_sync_mode() -> None:
    with pytest.raises(
        ConfigError, match=r"sync_mode 'incremental' is not supported.*full_refresh"
    ):
        configure_catalog(CATALOG, [StreamSelection("plain", sync_mode="incremental")])
    with pytest.raises(ConfigError, match="not supported"):
        configure_catalog(CATALOG, [StreamSelection("log", sync_mode="full_refresh")])
    with pytest.raises(ConfigError, match="not supported"):
        configure_catalog(CATALOG, [StreamSelection("plain", sync_mode="sideways")])


def test_unknown_destination_sync_mode() -> None:
    with pytest.raises(ConfigError, match="destination_sync_mode 'upsert' is not one of"):
        configure_catalog(CATALOG, [StreamSelection("plain", destination_sync_mode="upsert")])


def test_dedup_without_primary_key() -> None:
    with pytest.raises(ConfigError, match="append_dedup needs a primary key"):
        configure_catalog(
            CATALOG,
            [
                StreamSelection(
                    "events", sync_mode="incremental", destination_sync_mode="append_dedup"
                )
            ],
        )


def test_incremental_without_any_cursor() -> None:
    catalog = AirbyteCatalog(streams=[stream("nocursor")])
    with pytest.raises(ConfigError, match="needs a cursor_field"):
        configure_catalog(catalog, [StreamSelection("nocursor", sync_mode="incremental")])
    configured = configure_catalog(
        catalog, [StreamSelection("nocursor", sync_mode="incremental", cursor_field=["ts"])]
    )
    assert configured.streams[0].cursor_field == ["ts"]


def test_full_refresh_overrides_defaults_and_selections() -> None:
    configured = by_name(full_refresh=True)
    assert {n: modes(c) for n, c in configured.items()} == {
        "cdc": ("full_refresh", "overwrite"),
        "events": ("full_refresh", "overwrite"),
        "plain": ("full_refresh", "overwrite"),
        "orders": ("full_refresh", "overwrite"),
        # a stream that cannot be read in full keeps its incremental mode
        "log": ("incremental", "append"),
    }
    selected = by_name(
        [StreamSelection("cdc", sync_mode="incremental", destination_sync_mode="append_dedup")],
        full_refresh=True,
    )
    assert modes(selected["cdc"]) == ("full_refresh", "overwrite")


def test_namespaces() -> None:
    catalog = AirbyteCatalog(
        streams=[
            stream("users", ("full_refresh",), namespace="public"),
            stream("users", ("full_refresh",), namespace="archive"),
            stream("teams", ("full_refresh",), namespace="public"),
        ]
    )
    everything = configure_catalog(catalog)
    assert [(s.stream.namespace, s.stream.name) for s in everything.streams] == [
        ("public", "users"),
        ("archive", "users"),
        ("public", "teams"),
    ]
    chosen = configure_catalog(catalog, [StreamSelection("users", namespace="archive")])
    assert chosen.streams[0].stream.namespace == "archive"
    # a name alone is enough when it is unambiguous
    assert (
        configure_catalog(catalog, [StreamSelection("teams")]).streams[0].stream.namespace
        == "public"
    )
    with pytest.raises(ConfigError, match="several namespaces"):
        configure_catalog(catalog, [StreamSelection("users")])
    with pytest.raises(ConfigError, match=r"'other\.teams' is not in the catalog"):
        configure_catalog(catalog, [StreamSelection("teams", namespace="other")])


def test_a_stream_selected_twice() -> None:
    with pytest.raises(ConfigError, match="selected twice"):
        configure_catalog(CATALOG, [StreamSelection("plain"), StreamSelection("plain")])


def test_an_empty_catalog() -> None:
    assert configure_catalog(AirbyteCatalog(streams=[])).streams == []
    with pytest.raises(ConfigError, match="streams: none"):
        configure_catalog(AirbyteCatalog(streams=[]), [StreamSelection("x")])


def test_the_configured_catalog_serialises_to_protocol_json() -> None:
    configured = configure_catalog(CATALOG, [StreamSelection("cdc")])
    as_json = to_builtins(configured)
    assert as_json == {
        "streams": [
            {
                "stream": {
                    "name": "cdc",
                    "json_schema": {"type": "object"},
                    "supported_sync_modes": ["full_refresh", "incremental"],
                    "source_defined_cursor": True,
                    "default_cursor_field": ["_ab_cdc_lsn"],
                    "source_defined_primary_key": [["id"]],
                },
                "sync_mode": "incremental",
                "destination_sync_mode": "append_dedup",
                "cursor_field": ["_ab_cdc_lsn"],
                "primary_key": [["id"]],
            }
        ]
    }
    assert convert(as_json, type(configured)) == configured


# ------------------------------------------------------------------------------------------------
# generations (as the platform's CatalogGenerationSetter sets them) and stream selection
# ------------------------------------------------------------------------------------------------


def test_every_stream_gets_sync_id_generation_and_minimum() -> None:
    configured = configure_catalog(CATALOG)  # cdc: incremental, plain: full_refresh overwrite
    generations = {StreamDescriptor("cdc"): 4, StreamDescriptor("plain"): 7}
    result = with_generations(configured, 42, generations, truncate=[StreamDescriptor("orders")])
    fields = {
        s.stream.name: (s.sync_id, s.generation_id, s.minimum_generation_id) for s in result.streams
    }
    assert fields == {
        "cdc": (42, 4, 0),  # incremental: keeps every generation
        "events": (42, 0, 0),
        "plain": (42, 7, 7),  # full refresh + overwrite truncates
        "orders": (42, 0, 0),  # a truncate refresh of a stream without generation: 0
        "log": (42, 0, 0),
    }
    written = to_builtins(result)["streams"][0]
    assert {"sync_id", "generation_id", "minimum_generation_id"} <= written.keys()


def test_streams_are_selected_by_name_and_unknown_names_are_refused() -> None:
    configured = configure_catalog(CATALOG)
    assert len(select_streams(configured, [])) == 5
    assert select_streams(configured, ["plain", "cdc", "plain"]) == [
        StreamDescriptor("plain"),
        StreamDescriptor("cdc"),
    ]
    with pytest.raises(ConfigError, match=r"not a stream of this connection: 'nope', 'x\.cdc'"):
        select_streams(configured, ["nope", "cdc", "x.cdc"])
