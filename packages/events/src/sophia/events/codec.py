"""Envelopes to bytes and back: the one wire format of the bus (see docs/events.md).

A message is one or more envelopes, each a compact UTF-8 JSON document on a line of its own
(NDJSON): the publisher packs the events of one subject together (`publisher.pack`), which costs
NATS and every consumer one message where it cost one an event. A compact JSON document never holds
a line break of its own, so a message's envelopes are its lines (`unpack`)."""

from __future__ import annotations

import orjson

from sophia.core.errors import FieldError, Invalid
from sophia.core.events import Envelope

PACK_EVENTS = 256
"""The most envelopes one message carries."""
PACK_SPAN = 1_024
"""Room for one message's envelopes in a position that counts events (`sequence * PACK_SPAN +
index`, the real-time service's): more than `PACK_EVENTS`."""
PACK_BYTES = 128 * 1024
"""A message is closed before its envelopes pass this many bytes (a larger envelope goes alone)."""


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


def unpack(data: bytes) -> list[bytes]:
    """The envelopes of a message, as bytes, in order (one for a message of one). A line break at
    the end ends the last line, as in NDJSON; an empty message is one empty (invalid) envelope."""
    lines = data.split(b"\n")
    if len(lines) > 1 and not lines[-1]:
        del lines[-1]
    return lines


def count_events(data: bytes) -> int:
    """`len(unpack(data))`, without making the lines: for flow control and metrics."""
    count = data.count(b"\n") + 1
    return count - 1 if count > 1 and data.endswith(b"\n") else count


def decode_all(data: bytes) -> list[Envelope]:
    """The envelopes of a message; `Invalid` if any line is not a valid envelope."""
    return [decode(line) for line in unpack(data)]
