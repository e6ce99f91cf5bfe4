"""Envelopes to bytes and back: the one wire format of the bus (UTF-8 JSON, see docs/events.md)."""

from __future__ import annotations

import orjson

from sophia.core.errors import FieldError, Invalid
from sophia.core.events import Envelope


def encode(envelope: Envelope) -> bytes:
    """The envelope as JSON bytes, the same document `Envelope.as_dict()` describes."""
    # Built here rather than through as_dict() so orjson formats the datetime natively.
    return orjson.dumps(
        {
            "id": envelope.id,
            "type": envelope.type,
            "schema_version": envelope.schema_version,
            "occurred_at": envelope.occurred_at,
            "source": envelope.source,
            "key": envelope.key,
            "payload": envelope.payload,
            "trace_id": envelope.trace_id,
        },
        option=orjson.OPT_UTC_Z,
    )


def decode(data: bytes) -> Envelope:
    """The envelope in `data`; `Invalid` if it is not JSON or not a valid envelope."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise Invalid("The event is not valid JSON.", [FieldError(("body",), str(error))]) from None
    return Envelope.from_dict(parsed)
