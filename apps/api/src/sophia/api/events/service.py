"""Event ingestion: parse and validate a batch, give each event its envelope, publish them all."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from pydantic import ValidationError

from sophia.api.events.schemas import BATCH, EVENT, SystemEventIn, UserEventIn
from sophia.core.errors import FieldError, Invalid
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope, uuid7
from sophia.events.publisher import EventPublisher


def parse_json_array(body: bytes, max_events: int) -> list[UserEventIn | SystemEventIn]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Invalid(f"The body is not valid JSON: {error}.", [FieldError(("body",), str(error))]) from None
    if not isinstance(items, list):
        raise Invalid("Send a JSON array of events.", [FieldError(("body",), "not an array")])
    _check_count(len(items), max_events)
    try:
        return BATCH.validate_python(items)
    except ValidationError as error:
        raise _invalid(error, ("body",)) from None


def parse_ndjson(body: bytes, max_events: int) -> list[UserEventIn | SystemEventIn]:
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    _check_count(len(lines), max_events)
    events = []
    for number, line in lines:
        try:  # parsed and validated in one pass, straight from the bytes
            events.append(EVENT.validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            if first["type"] == "json_invalid":
                raise Invalid(
                    f"Line {number} is not valid JSON. Nothing was accepted.",
                    [FieldError(("line", number), first["msg"])],
                ) from None
            raise _invalid(error, ("line", number)) from None
    return events


def _check_count(count: int, max_events: int) -> None:
    if count == 0:
        raise Invalid("Send at least one event.", [FieldError(("body",), "no events")])
    if count > max_events:
        raise Invalid(
            f"A batch holds at most {max_events} events; this one has {count}. Split it.",
            [FieldError(("body",), f"{count} events, more than {max_events}")],
        )


def _invalid(error: ValidationError, where: tuple[str | int, ...]) -> Invalid:
    errors = [FieldError((*where, *item["loc"]), item["msg"]) for item in error.errors()]
    first = errors[0]
    place = ".".join(str(part) for part in first.location)
    return Invalid(f"{place}: {first.message}. Nothing was accepted.", errors)


def envelopes(events: list[UserEventIn | SystemEventIn], trace_id: str | None) -> list[Envelope]:
    now = datetime.now(UTC)
    return [
        Envelope(
            id=event.id or str(uuid7()),
            type=event.type,
            schema_version=EVENT_TYPES[event.type].schema_version,
            occurred_at=event.occurred_at or now,
            source=event.source,
            key=event.key,
            payload=event.payload_dict(),
            trace_id=event.trace_id or trace_id,
        )
        for event in events
    ]


async def ingest(publisher: EventPublisher, batch: list[Envelope]) -> None:
    """Every event of `batch` acknowledged by JetStream, or an error (and then resend them all)."""
    await publisher.publish(batch)
