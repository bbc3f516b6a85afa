"""Typed AirbyteMessage structures (Airbyte Protocol v0.5).

Every struct ignores unknown fields (msgspec's default) and gives every optional field a default,
so messages from older and newer connectors decode. Enumerations are plain strings: a connector
that sends a value added in a later protocol version must still decode; the constants below name
the values ferry acts on.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

JsonObject = dict[str, Any]

# AirbyteMessage.type
RECORD = "RECORD"
STATE = "STATE"
LOG = "LOG"
SPEC = "SPEC"
CONNECTION_STATUS = "CONNECTION_STATUS"
CATALOG = "CATALOG"
TRACE = "TRACE"
CONTROL = "CONTROL"
DESTINATION_CATALOG = "DESTINATION_CATALOG"
MESSAGE_TYPES = frozenset(
    {RECORD, STATE, LOG, SPEC, CONNECTION_STATUS, CATALOG, TRACE, CONTROL, DESTINATION_CATALOG}
)

# AirbyteStateMessage.type
STATE_LEGACY = "LEGACY"
STATE_STREAM = "STREAM"
STATE_GLOBAL = "GLOBAL"

# AirbyteTraceMessage.type and AirbyteStreamStatusTraceMessage.status
TRACE_STREAM_STATUS = "STREAM_STATUS"
STREAM_STARTED = "STARTED"
STREAM_RUNNING = "RUNNING"
STREAM_COMPLETE = "COMPLETE"
STREAM_INCOMPLETE = "INCOMPLETE"

# sync modes
FULL_REFRESH = "full_refresh"
INCREMENTAL = "incremental"
OVERWRITE = "overwrite"
APPEND = "append"
APPEND_DEDUP = "append_dedup"
# destination sync modes only a destination's DESTINATION_CATALOG offers (data activation)
UPDATE = "update"
SOFT_DELETE = "soft_delete"


class _Struct(msgspec.Struct, omit_defaults=True):
    """Base: unknown fields are ignored, fields equal to their default are not written."""


class _FrozenStruct(msgspec.Struct, omit_defaults=True, frozen=True):
    """The same, immutable and hashable (a frozen class cannot derive from `_Struct`)."""


class StreamDescriptor(_FrozenStruct, frozen=True):
    name: str
    namespace: str | None = None


class RecordMeta(_Struct):
    changes: list[JsonObject] | None = None


class AirbyteRecordMessage(_Struct):
    stream: str
    data: JsonObject
    emitted_at: int
    namespace: str | None = None
    meta: RecordMeta | None = None
    file_reference: JsonObject | None = None


class StateStats(_Struct):
    recordCount: float | None = None
    rejectedRecordCount: float | None = None


class AirbyteStreamState(_Struct):
    stream_descriptor: StreamDescriptor
    stream_state: Any = None


class AirbyteGlobalState(_Struct):
    stream_states: list[AirbyteStreamState]
    shared_state: Any = None


class AirbyteStateMessage(_Struct):
    # Optional in the protocol: a missing or null type means LEGACY (normalised on decode).
    type: str | None = STATE_LEGACY
    stream: AirbyteStreamState | None = None
    global_: AirbyteGlobalState | None = msgspec.field(default=None, name="global")
    data: Any = None
    sourceStats: StateStats | None = None
    destinationStats: StateStats | None = None

    def __post_init__(self) -> None:
        if self.type is None:
            self.type = STATE_LEGACY


class AirbyteLogMessage(_Struct):
    level: str
    message: str
    stack_trace: str | None = None


class ConnectorSpecification(_Struct):
    connectionSpecification: JsonObject
    documentationUrl: str | None = None
    changelogUrl: str | None = None
    supportsIncremental: bool | None = None
    supportsNormalization: bool | None = None
    supportsDBT: bool | None = None
    supported_destination_sync_modes: list[str] | None = None
    advanced_auth: JsonObject | None = None
    authSpecification: JsonObject | None = None
    protocol_version: str | None = None


class AirbyteConnectionStatus(_Struct):
    status: str
    message: str | None = None


class AirbyteStream(_Struct):
    name: str
    json_schema: JsonObject
    supported_sync_modes: list[str]
    source_defined_cursor: bool | None = None
    default_cursor_field: list[str] | None = None
    source_defined_primary_key: list[list[str]] | None = None
    namespace: str | None = None
    is_resumable: bool | None = None
    is_file_based: bool | None = None


class AirbyteCatalog(_Struct):
    streams: list[AirbyteStream]


class ConfiguredAirbyteStream(_Struct):
    stream: AirbyteStream
    sync_mode: str
    destination_sync_mode: str
    cursor_field: list[str] | None = None
    primary_key: list[list[str]] | None = None
    generation_id: int | None = None
    minimum_generation_id: int | None = None
    sync_id: int | None = None
    destination_object_name: str | None = None
    include_files: bool | None = None


class ConfiguredAirbyteCatalog(_Struct):
    streams: list[ConfiguredAirbyteStream]


class DestinationOperation(_Struct):
    """One thing a destination can do with records: write `object_name` with `sync_mode`."""

    object_name: str
    sync_mode: str
    json_schema: JsonObject = msgspec.field(default_factory=dict)
    matching_keys: list[list[str]] | None = None


class DestinationCatalog(_Struct):
    """What a destination's `discover` answers (a DESTINATION_CATALOG message's payload)."""

    operations: list[DestinationOperation]


class AirbyteErrorTraceMessage(_Struct):
    message: str
    internal_message: str | None = None
    stack_trace: str | None = None
    failure_type: str | None = None
    stream_descriptor: StreamDescriptor | None = None


class AirbyteEstimateTraceMessage(_Struct):
    name: str
    type: str
    namespace: str | None = None
    row_estimate: int | None = None
    byte_estimate: int | None = None


class AirbyteStreamStatusReason(_Struct):
    type: str
    rate_limited: JsonObject | None = None


class AirbyteStreamStatusTraceMessage(_Struct):
    stream_descriptor: StreamDescriptor
    status: str
    reasons: list[AirbyteStreamStatusReason] | None = None


class AirbyteAnalyticsTraceMessage(_Struct):
    type: str
    value: str | None = None


class AirbyteTraceMessage(_Struct):
    type: str
    emitted_at: float
    error: AirbyteErrorTraceMessage | None = None
    estimate: AirbyteEstimateTraceMessage | None = None
    stream_status: AirbyteStreamStatusTraceMessage | None = None
    analytics: AirbyteAnalyticsTraceMessage | None = None


class AirbyteControlConnectorConfigMessage(_Struct):
    config: JsonObject


class AirbyteControlMessage(_Struct):
    type: str
    emitted_at: float
    connectorConfig: AirbyteControlConnectorConfigMessage | None = None


class AirbyteMessage(_Struct):
    type: str
    log: AirbyteLogMessage | None = None
    spec: ConnectorSpecification | None = None
    connectionStatus: AirbyteConnectionStatus | None = None
    catalog: AirbyteCatalog | None = None
    record: AirbyteRecordMessage | None = None
    state: AirbyteStateMessage | None = None
    trace: AirbyteTraceMessage | None = None
    control: AirbyteControlMessage | None = None
    destination_catalog: JsonObject | None = None


class RoutingRecord(_FrozenStruct, frozen=True, gc=False):
    """Hashable: the pump counts records per (stream, namespace) with a Counter.

    gc=False: it only holds strings, so it cannot be part of a reference cycle, and one is
    built per record line; untracked, they cost the garbage collector nothing (-6% of the
    envelope decode).
    """

    stream: str
    namespace: str | None = None


class Envelope(_Struct, gc=False):
    """Only what the pump needs to route a line; the rest of the line is skipped, not built."""

    type: str
    record: RoutingRecord | None = None


KnownType = Literal[
    "RECORD",
    "STATE",
    "LOG",
    "SPEC",
    "CONNECTION_STATUS",
    "CATALOG",
    "TRACE",
    "CONTROL",
    "DESTINATION_CATALOG",
]


class KnownEnvelope(Envelope, gc=False):
    """An Envelope whose type is one of MESSAGE_TYPES, for decoding whole blocks of lines.

    msgspec returns the Literal's own string for `type` instead of building one per line (-4%
    of the pump's CPU). A block holding any other type does not decode as KnownEnvelopes; the
    pump then routes it line by line with Envelope, which accepts every type.
    """

    type: KnownType
