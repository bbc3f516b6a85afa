"""The Airbyte Protocol: message structures (`ferry.protocol.messages`), decoding, catalogs.

Pure: no I/O.
"""

from ferry.protocol.catalog import StreamSelection, configure_catalog, default_modes
from ferry.protocol.decode import (
    convert,
    decode_envelope,
    decode_envelopes,
    decode_message,
    encode,
    to_builtins,
)

__all__ = [
    "StreamSelection",
    "configure_catalog",
    "convert",
    "decode_envelope",
    "decode_envelopes",
    "decode_message",
    "default_modes",
    "encode",
    "to_builtins",
]
