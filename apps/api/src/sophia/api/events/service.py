"""Event ingestion: parse and validate a batch, give each event its envelope, publish them all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from sophia.api.events.schemas import BATCH, EVENT, SystemEventIn, UserEventIn
from sophia.api.records.schemas import check_storable
from sophia.core.documents import nesting_possible
from sophia.core.errors import FieldError, Invalid
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope, uuid7
from sophia.events.publisher import EventPublisher

NUL = b"\\u0000"
"""How JSON spells the NUL character, which no PostgreSQL text or jsonb value may hold."""


def parse_json_array(body: bytes, max_events: int) -> list[UserEventIn | SystemEventIn]:
    try:  # strict JSON: NaN, Infinity and numbers beyond a double are refused here
        items = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Invalid(f"The body is not valid JSON: {error}.", [FieldError(("body",), str(error))]) from None
    if not isinstance(items, list):
        raise Invalid("Send a JSON array of events.", [FieldError(("body",), "not an array")])
    _check_count(len(items), max_events)
    try:
        events = BATCH.validate_python(items)
    except ValidationError as error:
        raise _invalid(error, ("body",)) from None
    if NUL in body or nesting_possible(body):
        for index, item in enumerate(items):
            _check_storable(item, ("body", index))
    return events


def parse_ndjson(body: bytes, max_events: int) -> list[UserEventIn | SystemEventIn]:
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    _check_count(len(lines), max_events)
    events = []
    for number, line in lines:
        try:  # strict JSON, as above
            item: Any = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise Invalid(
                f"Line {number} is not valid JSON ({error}). Nothing was accepted.",
                [FieldError(("line", number), str(error))],
            ) from None
        try:
            events.append(EVENT.validate_python(item))
        except ValidationError as error:
            raise _invalid(error, ("line", number)) from None
        if NUL in line or nesting_possible(line):
            _check_storable(item, ("line", number))
    return events


def _check_storable(item: dict[str, Any], where: tuple[str | int, ...]) -> None:
    """What no document may hold (NUL, nesting past `MAX_DEPTH`). Only for the rare batch whose raw
    JSON holds an escaped NUL or may nest too deep (`nesting_possible`, by depth, not by how many
    brackets a large batch holds): walking every payload cost more than validating it."""
    for name, value in item.items():
        try:
            check_storable(value)
        except ValueError as error:
            place = ".".join(str(part) for part in (*where, name))
            raise Invalid(
                f"{place}: {error}. Nothing was accepted.", [FieldError((*where, name), str(error))]
            ) from None


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
