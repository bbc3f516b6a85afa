"""ferry's structures against the official protocol models (airbyte-protocol-models-pdv2).

Every message type is built with the official pydantic models, serialised the ways connectors do,
decoded by ferry, and compared field by field with the official model's own view of it.

How connectors serialise: the Python CDK (since 2024) dumps its models with serpyco-rs and
`omit_none=True`, then `orjson.dumps` — equivalent to pydantic's `exclude_none`. Older, pydantic
based CDKs wrote `message.json(exclude_unset=True)`. A connector in another language may write
every optional field as an explicit null; the official models accept that, so ferry must too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import pytest
from airbyte_protocol import models as ab
from pydantic import BaseModel

from ferry.errors import DecodeError
from ferry.protocol import decode_envelope, decode_message, encode, to_builtins
from ferry.protocol.messages import AirbyteMessage, ConfiguredAirbyteCatalog

STREAM = ab.StreamDescriptor(name="users", namespace="public")


def _stream(name: str, namespace: str | None = None) -> ab.AirbyteStream:
    return ab.AirbyteStream(
        name=name,
        namespace=namespace,
        json_schema={"type": "object", "properties": {"id": {"type": "integer"}}},
        supported_sync_modes=[ab.SyncMode.full_refresh, ab.SyncMode.incremental],
        source_defined_cursor=True,
        default_cursor_field=["updated_at"],
        source_defined_primary_key=[["id"]],
        is_resumable=True,
        is_file_based=False,
    )


def _trace(**kwargs: Any) -> ab.AirbyteMessage:
    return ab.AirbyteMessage(
        type=ab.Type.TRACE, trace=ab.AirbyteTraceMessage(emitted_at=1712345678901.0, **kwargs)
    )


MESSAGES: dict[str, ab.AirbyteMessage] = {
    "record": ab.AirbyteMessage(
        type=ab.Type.RECORD,
        record=ab.AirbyteRecordMessage(
            namespace="public",
            stream="users",
            data={"id": 1, "name": "Ada", "tags": ["a", "b"], "nested": {"x": 1.5, "y": None}},
            emitted_at=1712345678901,
            meta=ab.AirbyteRecordMessageMeta(
                changes=[
                    ab.AirbyteRecordMessageMetaChange(
                        field="name",
                        change=ab.Change.TRUNCATED,
                        reason=ab.Reason.SOURCE_FIELD_SIZE_LIMITATION,
                    )
                ]
            ),
            file_reference=ab.AirbyteRecordMessageFileReference(
                staging_file_url="/staging/a.csv",
                source_file_relative_path="a.csv",
                file_size_bytes=12,
            ),
        ),
    ),
    "state_legacy": ab.AirbyteMessage(
        type=ab.Type.STATE,
        state=ab.AirbyteStateMessage(type=ab.AirbyteStateType.LEGACY, data={"users": {"c": 5}}),
    ),
    "state_stream": ab.AirbyteMessage(
        type=ab.Type.STATE,
        state=ab.AirbyteStateMessage(
            type=ab.AirbyteStateType.STREAM,
            stream=ab.AirbyteStreamState(
                stream_descriptor=STREAM,
                stream_state=ab.AirbyteStateBlob(cursor="2024-01-01", page=[1, 2]),
            ),
            sourceStats=ab.AirbyteStateStats(recordCount=10.0),
            destinationStats=ab.AirbyteStateStats(recordCount=9.0, rejectedRecordCount=1.0),
        ),
    ),
    "state_global": ab.AirbyteMessage(
        type=ab.Type.STATE,
        state=ab.AirbyteStateMessage(
            type=ab.AirbyteStateType.GLOBAL,
            # `global_=` would land in the model's extras: the alias is the way to set it
            **{
                "global": ab.AirbyteGlobalState(
                    shared_state=ab.AirbyteStateBlob(lsn=123456),
                    stream_states=[
                        ab.AirbyteStreamState(
                            stream_descriptor=STREAM, stream_state=ab.AirbyteStateBlob(c=1)
                        ),
                        ab.AirbyteStreamState(stream_descriptor=ab.StreamDescriptor(name="orders")),
                    ],
                )
            },
            sourceStats=ab.AirbyteStateStats(recordCount=3.0),
            destinationStats=ab.AirbyteStateStats(recordCount=3.0),
        ),
    ),
    "log": ab.AirbyteMessage(
        type=ab.Type.LOG,
        log=ab.AirbyteLogMessage(
            level=ab.Level.ERROR, message="it broke", stack_trace="Traceback ...\n  x"
        ),
    ),
    "spec": ab.AirbyteMessage(
        type=ab.Type.SPEC,
        spec=ab.ConnectorSpecification(
            documentationUrl="https://docs.example.com/source",
            changelogUrl="https://docs.example.com/changelog",
            connectionSpecification={
                "type": "object",
                "required": ["api_key"],
                "properties": {"api_key": {"type": "string", "airbyte_secret": True}},
            },
            supportsIncremental=True,
            supportsNormalization=False,
            supportsDBT=False,
            supported_destination_sync_modes=[
                ab.DestinationSyncMode.append,
                ab.DestinationSyncMode.overwrite,
                ab.DestinationSyncMode.append_dedup,
            ],
            authSpecification=ab.AuthSpecification(
                auth_type=ab.AuthType.oauth2_0,
                oauth2Specification=ab.OAuth2Specification(
                    rootObject=["credentials", 0],
                    oauthFlowInitParameters=[["client_id"]],
                    oauthFlowOutputParameters=[["refresh_token"]],
                ),
            ),
            advanced_auth=ab.AdvancedAuth(
                auth_flow_type=ab.AuthFlowType.oauth2_0,
                predicate_key=["credentials", "auth_type"],
                predicate_value="oauth2.0",
            ),
            protocol_version="0.5.2",
        ),
    ),
    "connection_status": ab.AirbyteMessage(
        type=ab.Type.CONNECTION_STATUS,
        connectionStatus=ab.AirbyteConnectionStatus(
            status=ab.Status.FAILED, message="401 Unauthorized"
        ),
    ),
    "catalog": ab.AirbyteMessage(
        type=ab.Type.CATALOG,
        catalog=ab.AirbyteCatalog(streams=[_stream("users", "public"), _stream("orders")]),
    ),
    "trace_error": _trace(
        type=ab.TraceType.ERROR,
        error=ab.AirbyteErrorTraceMessage(
            message="Something went wrong",
            internal_message="KeyError: 'x'",
            stack_trace="Traceback ...",
            failure_type=ab.FailureType.config_error,
            stream_descriptor=STREAM,
        ),
    ),
    "trace_estimate": _trace(
        type=ab.TraceType.ESTIMATE,
        estimate=ab.AirbyteEstimateTraceMessage(
            name="users",
            namespace="public",
            type=ab.EstimateType.STREAM,
            row_estimate=1000,
            byte_estimate=200000,
        ),
    ),
    "trace_stream_status": _trace(
        type=ab.TraceType.STREAM_STATUS,
        stream_status=ab.AirbyteStreamStatusTraceMessage(
            stream_descriptor=STREAM,
            status=ab.AirbyteStreamStatus.INCOMPLETE,
            reasons=[
                ab.AirbyteStreamStatusReason(
                    type=ab.AirbyteStreamStatusReasonType.RATE_LIMITED,
                    rate_limited=ab.AirbyteStreamStatusRateLimitedReason(quota_reset=1712345679),
                )
            ],
        ),
    ),
    "trace_analytics": _trace(
        type=ab.TraceType.ANALYTICS,
        analytics=ab.AirbyteAnalyticsTraceMessage(type="file_size_bytes", value="123"),
    ),
    "control": ab.AirbyteMessage(
        type=ab.Type.CONTROL,
        control=ab.AirbyteControlMessage(
            type=ab.OrchestratorType.CONNECTOR_CONFIG,
            emitted_at=1712345678901.0,
            connectorConfig=ab.AirbyteControlConnectorConfigMessage(
                config={"refresh_token": "new", "nested": {"a": [1, 2]}}
            ),
        ),
    ),
    "destination_catalog": ab.AirbyteMessage(
        type=ab.Type.DESTINATION_CATALOG,
        destination_catalog=ab.DestinationCatalog(
            operations=[
                ab.DestinationOperation(
                    object_name="users",
                    sync_mode=ab.DestinationSyncMode.update,
                    json_schema={"type": "object"},
                    matching_keys=[["id"]],
                )
            ]
        ),
    ),
}

SERIALISERS: dict[str, Callable[[BaseModel], bytes]] = {
    # the Python CDK today: serpyco-rs with omit_none, then orjson
    "cdk": lambda m: orjson.dumps(m.model_dump(mode="json", by_alias=True, exclude_none=True)),
    # pydantic-based CDKs: .json(exclude_unset=True)
    "exclude_unset": lambda m: m.model_dump_json(by_alias=True, exclude_unset=True).encode(),
    # every optional field as an explicit null
    "explicit_nulls": lambda m: m.model_dump_json(by_alias=True).encode(),
}


def without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def fields_of(value: Any) -> Any:
    """A decoded struct as plain data with its wire names, default-valued fields included."""
    if isinstance(value, msgspec.Struct):
        return {
            f.encode_name: fields_of(getattr(value, f.name))
            for f in msgspec.structs.fields(type(value))
        }
    if isinstance(value, dict):
        return {k: fields_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fields_of(v) for v in value]
    return value


def official_view(line: bytes, *, exclude_unset: bool = False) -> Any:
    """The message as the official models read it back."""
    model = ab.AirbyteMessage.model_validate_json(line)
    return without_none(model.model_dump(mode="json", by_alias=True, exclude_unset=exclude_unset))


@pytest.mark.parametrize("serialiser", SERIALISERS)
@pytest.mark.parametrize("kind", MESSAGES)
def test_every_message_type_decodes_to_the_same_values(kind: str, serialiser: str) -> None:
    line = SERIALISERS[serialiser](MESSAGES[kind])
    ours = decode_message(line)
    assert without_none(fields_of(ours)) == official_view(line)


@pytest.mark.parametrize("kind", MESSAGES)
def test_to_builtins_is_the_official_dict(kind: str) -> None:
    line = SERIALISERS["cdk"](MESSAGES[kind])
    official = official_view(line)
    ours = to_builtins(decode_message(line))
    if kind == "state_legacy":
        # LEGACY is the default state type, which ferry may omit: a missing type means LEGACY
        ours["state"].setdefault("type", "LEGACY")
    assert without_none(ours) == official


@pytest.mark.parametrize("kind", MESSAGES)
def test_what_ferry_encodes_the_official_models_read_back_unchanged(kind: str) -> None:
    line = SERIALISERS["cdk"](MESSAGES[kind])
    assert official_view(encode(decode_message(line))) == official_view(line)


@pytest.mark.parametrize("kind", MESSAGES)
def test_envelope_routes_every_message_type(kind: str) -> None:
    line = SERIALISERS["cdk"](MESSAGES[kind])
    envelope = decode_envelope(line)
    assert envelope.type == MESSAGES[kind].type.value
    if kind == "record":
        assert envelope.record is not None
        assert (envelope.record.stream, envelope.record.namespace) == ("users", "public")
    else:
        assert envelope.record is None


def test_a_configured_catalog_from_ferry_is_valid_for_the_official_models() -> None:
    catalog = ab.ConfiguredAirbyteCatalog(
        streams=[
            ab.ConfiguredAirbyteStream(
                stream=_stream("users", "public"),
                sync_mode=ab.SyncMode.incremental,
                destination_sync_mode=ab.DestinationSyncMode.append_dedup,
                cursor_field=["updated_at"],
                primary_key=[["id"]],
                generation_id=3,
                minimum_generation_id=0,
                sync_id=42,
                destination_object_name="users_v2",
                include_files=False,
            )
        ]
    )
    line = SERIALISERS["cdk"](catalog)
    ours = msgspec.json.decode(line, type=ConfiguredAirbyteCatalog)
    official = without_none(catalog.model_dump(mode="json", by_alias=True))
    assert without_none(fields_of(ours)) == official
    reread = ab.ConfiguredAirbyteCatalog.model_validate_json(encode(ours))
    assert without_none(reread.model_dump(mode="json", by_alias=True)) == official


# -- tolerance -------------------------------------------------------------------------------

UNKNOWN = "zz_field_from_the_future"


def with_unknown_fields(value: Any) -> Any:
    """The same JSON with an unknown key added to every object, at every depth."""
    if isinstance(value, dict):
        grown = {k: with_unknown_fields(v) for k, v in value.items()}
        grown[UNKNOWN] = {"nested": [1, {"deep": True}]}
        return grown
    if isinstance(value, list):
        return [with_unknown_fields(v) for v in value]
    return value


def without_unknown(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_unknown(v) for k, v in value.items() if k != UNKNOWN}
    if isinstance(value, list):
        return [without_unknown(v) for v in value]
    return value


@pytest.mark.parametrize("kind", MESSAGES)
def test_unknown_fields_are_ignored_at_every_level(kind: str) -> None:
    line = SERIALISERS["cdk"](MESSAGES[kind])
    grown = orjson.dumps(with_unknown_fields(orjson.loads(line)))
    # free-form blobs (record data, schemas, state blobs, configs) keep the key; structs drop it
    assert without_unknown(fields_of(decode_message(grown))) == fields_of(decode_message(line))
    assert decode_envelope(grown) == decode_envelope(line)


MINIMAL = {
    "record": {"type": "RECORD", "record": {"stream": "s", "data": {}, "emitted_at": 0}},
    "state_no_type": {"type": "STATE", "state": {"data": {}}},
    "state_stream": {
        "type": "STATE",
        "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "s"}}},
    },
    "state_global": {"type": "STATE", "state": {"type": "GLOBAL", "global": {"stream_states": []}}},
    "log": {"type": "LOG", "log": {"level": "INFO", "message": ""}},
    "spec": {"type": "SPEC", "spec": {"connectionSpecification": {}}},
    "connection_status": {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}},
    "catalog": {"type": "CATALOG", "catalog": {"streams": []}},
    "trace_error": {
        "type": "TRACE",
        "trace": {"type": "ERROR", "emitted_at": 0, "error": {"message": "x"}},
    },
    "trace_estimate": {
        "type": "TRACE",
        "trace": {"type": "ESTIMATE", "emitted_at": 0, "estimate": {"name": "s", "type": "SYNC"}},
    },
    "trace_stream_status": {
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": 0,
            "stream_status": {"stream_descriptor": {"name": "s"}, "status": "COMPLETE"},
        },
    },
    "trace_analytics": {
        "type": "TRACE",
        "trace": {"type": "ANALYTICS", "emitted_at": 0, "analytics": {"type": "x"}},
    },
    "control": {
        "type": "CONTROL",
        "control": {"type": "CONNECTOR_CONFIG", "emitted_at": 0, "connectorConfig": {"config": {}}},
    },
    "bare_type": {"type": "LOG"},
}


@pytest.mark.parametrize("kind", MINIMAL)
def test_messages_with_only_required_fields_decode(kind: str) -> None:
    line = orjson.dumps(MINIMAL[kind])
    ours = decode_message(line)
    # exclude_unset: the official models default supportsNormalization/supportsDBT to False
    assert without_none(fields_of(ours)) == official_view(line, exclude_unset=True) | (
        {"state": {"type": "LEGACY", "data": {}}} if kind == "state_no_type" else {}
    )


def test_a_state_without_type_or_with_a_null_type_is_legacy() -> None:
    for body in ({"data": {"a": 1}}, {"type": None, "data": {"a": 1}}):
        message = decode_message(orjson.dumps({"type": "STATE", "state": body}))
        assert message.state is not None
        assert message.state.type == "LEGACY"
        assert message.state.data == {"a": 1}


def test_an_integral_float_is_accepted_where_an_integer_is_expected() -> None:
    # like the official models (pydantic's lax mode); 1.5 is rejected by both
    line = b'{"type":"RECORD","record":{"stream":"s","data":{},"emitted_at":1712345678901.0}}'
    record = decode_message(line).record
    assert record is not None
    assert record.emitted_at == 1712345678901
    assert isinstance(record.emitted_at, int)
    assert ab.AirbyteMessage.model_validate_json(line).record.emitted_at == 1712345678901
    with pytest.raises(DecodeError):
        decode_message(line.replace(b"901.0", b"901.5"))


UNKNOWN_ENUMS = {
    "log level": {"type": "LOG", "log": {"level": "SUPERLOUD", "message": "m"}},
    "connection status": {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "MAYBE"}},
    "state type": {"type": "STATE", "state": {"type": "PER_PARTITION", "data": {}}},
    "trace type": {"type": "TRACE", "trace": {"type": "HEARTBEAT", "emitted_at": 1}},
    "failure type": {
        "type": "TRACE",
        "trace": {
            "type": "ERROR",
            "emitted_at": 1,
            "error": {"message": "m", "failure_type": "cosmic_ray"},
        },
    },
    "stream status": {
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": 1,
            "stream_status": {"stream_descriptor": {"name": "s"}, "status": "PAUSED"},
        },
    },
    "estimate type": {
        "type": "TRACE",
        "trace": {
            "type": "ESTIMATE",
            "emitted_at": 1,
            "estimate": {"name": "s", "type": "PARTITION"},
        },
    },
    "control type": {"type": "CONTROL", "control": {"type": "NEW_ORDER", "emitted_at": 1}},
    "sync mode": {
        "type": "CATALOG",
        "catalog": {
            "streams": [{"name": "s", "json_schema": {}, "supported_sync_modes": ["magic"]}]
        },
    },
    "destination sync mode": {
        "type": "SPEC",
        "spec": {"connectionSpecification": {}, "supported_destination_sync_modes": ["teleport"]},
    },
    "record change": {
        "type": "RECORD",
        "record": {
            "stream": "s",
            "data": {},
            "emitted_at": 1,
            "meta": {"changes": [{"field": "f", "change": "SHRUNK", "reason": "WHY"}]},
        },
    },
}


@pytest.mark.parametrize("where", UNKNOWN_ENUMS)
def test_unknown_enum_values_decode_and_are_kept(where: str) -> None:
    body = UNKNOWN_ENUMS[where]
    line = orjson.dumps(body)
    assert to_builtins(decode_message(line)) == body


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"SCHEMA","schema":{}}',
        b'{"type":"record","record":{"stream":"s","data":{},"emitted_at":0}}',
        b'{"type":""}',
        b'{"record":{"stream":"s","data":{},"emitted_at":0}}',
        b'{"type":null}',
        b'{"type":7}',
        b"[]",
        b'"RECORD"',
        b"null",
        b"",
        b"not json at all",
        b'{"type":"RECORD","record":{"stream":"s","data":[],"emitted_at":0}}',
        b'{"type":"RECORD","record":{"data":{},"emitted_at":0}}',
        b'{"type":"RECORD","record":"s"}',
        b'\xff\xfe{"type":"LOG"}',
    ],
)
def test_not_an_airbyte_message_is_a_decode_error(line: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(line)


def test_an_unknown_type_still_routes_as_an_envelope() -> None:
    """The pump routes by envelope and decides itself what to do with an unknown type."""
    assert decode_envelope(b'{"type":"SCHEMA","schema":{}}').type == "SCHEMA"


def test_record_payload_is_kept_exactly() -> None:
    data = {
        "big": 2**63 - 1,
        "neg": -(2**63),
        "float": 1e-300,
        "unicode": "żółw 🐢",
        "esc": 'a"\\\n',
    }
    line = orjson.dumps(
        {"type": "RECORD", "record": {"stream": "s", "data": data, "emitted_at": 1}}
    )
    record = decode_message(line).record
    assert record is not None
    assert record.data == data


def test_ferry_decodes_what_it_encodes() -> None:
    for message in MESSAGES.values():
        ours = decode_message(SERIALISERS["cdk"](message))
        assert decode_message(encode(ours)) == ours
        assert isinstance(ours, AirbyteMessage)
