"""The event envelope every message on the bus carries, and its UUIDv7 ids.

The event types (and `docs/events.md`, generated from them) live in `sophia.core.event_types`.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sophia.core.errors import FieldError, Invalid
from sophia.core.records import IDENTIFIER_PATTERN

_RAND_B_BITS = 62
_TIME_MAX_MS = 1 << 48
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def uuid7(unix_ms: int | None = None, tail: int | None = None) -> uuid.UUID:
    """An RFC 9562 UUIDv7: 48 bits of unix milliseconds (now by default), then random bits.

    With `tail` (0 <= tail < 2**62) the id is deterministic: rand_a is 0 and rand_b is `tail`, so
    an event derived from an outbox row is the same UUID each time it is published again.
    """
    if unix_ms is None:
        unix_ms = time.time_ns() // 1_000_000
    if not 0 <= unix_ms < _TIME_MAX_MS:
        raise ValueError(f"unix_ms must be in [0, 2**48), got {unix_ms}")
    if tail is None:
        random = secrets.randbits(12 + _RAND_B_BITS)
        rand_a, rand_b = random >> _RAND_B_BITS, random & ((1 << _RAND_B_BITS) - 1)
    elif 0 <= tail < 1 << _RAND_B_BITS:
        rand_a, rand_b = 0, tail
    else:
        raise ValueError(f"tail must be in [0, 2**62), got {tail}")
    return uuid.UUID(int=unix_ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The unix milliseconds a UUIDv7 was made at."""
    if value.version != 7:
        raise ValueError(f"not a UUIDv7: {value}")
    return value.int >> 80


UUID7_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
"""Event type names: dotted lowercase words, `<domain>.<what happened>`."""
TRACE_ID_MAX_LENGTH = 128
KEY_MAX_LENGTH = 512
"""An event's `key`, and a user event's `user_id`: the real-time service's `user-events:<user>`
channel takes any of them, so every user's events can be followed."""

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

ENVELOPE_PROPERTIES: dict[str, dict[str, object]] = {
    "id": {
        "description": "UUIDv7, unique per event and the same on every re-publication (broker dedup).",
        "type": "string",
        "format": "uuid",
        "pattern": UUID7_PATTERN,
    },
    "type": {
        "description": "What happened, e.g. `record.upserted`.",
        "type": "string",
        "pattern": TYPE_PATTERN,
    },
    "schema_version": {
        "description": "Version of this type's payload schema; it grows on breaking changes.",
        "type": "integer",
        "minimum": 1,
    },
    "occurred_at": {
        "description": "When it happened: RFC 3339 in UTC, ending in `Z`.",
        "type": "string",
        "format": "date-time",
    },
    "source": {
        "description": "The producing system: `catalog`, `api`, or a client's source name.",
        "type": "string",
        "pattern": IDENTIFIER_PATTERN,
    },
    "key": {
        "description": "Ordering key: events with one key stay in order.",
        "type": "string",
        "minLength": 1,
    },
    "payload": {"description": "The type's data, as its payload schema says.", "type": "object"},
    "trace_id": {
        "description": "The request or trace that caused the event; may be null.",
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": TRACE_ID_MAX_LENGTH,
    },
}
ENVELOPE_REQUIRED = ["id", "type", "schema_version", "occurred_at", "source", "key", "payload"]

ENVELOPE_SCHEMA: Mapping[str, object] = {
    "$schema": JSON_SCHEMA_DIALECT,
    "title": "Event envelope",
    "type": "object",
    "additionalProperties": False,
    "required": ENVELOPE_REQUIRED,
    "properties": ENVELOPE_PROPERTIES,
}
"""The JSON Schema (draft 2020-12) of `Envelope.as_dict()`."""


class _Wrong(Exception):
    """One envelope field's value breaks its rule; the message says how."""


_UUID7 = re.compile(UUID7_PATTERN)
_TYPE = re.compile(TYPE_PATTERN)
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def _text(value: object, pattern: re.Pattern[str] | None = None, rule: str = "") -> str:
    if not isinstance(value, str):
        raise _Wrong("must be a string")
    if not value:
        raise _Wrong("must not be empty")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise _Wrong(f"must be {rule}")
    return value


def _parse_id(value: object) -> str:
    return _text(value, _UUID7, "a UUIDv7, lowercase and hyphenated")


def _parse_type(value: object) -> str:
    return _text(value, _TYPE, "dotted lowercase words, e.g. record.upserted")


def _parse_schema_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Wrong("must be an integer")
    if value < 1:
        raise _Wrong("must be at least 1")
    return value


def _parse_occurred_at(value: object) -> datetime:
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Wrong("must be an ISO 8601 date-time") from None
    return _as_utc(moment)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _Wrong("must carry a UTC offset (naive date-times are ambiguous)")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _parse_source(value: object) -> str:
    return _text(value, _IDENTIFIER, "a lowercase identifier (a letter, then letters, digits, _ or -)")


def _parse_key(value: object) -> str:
    return _text(value)


def _parse_payload(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Wrong("must be a JSON object")
    return value


def _parse_trace_id(value: object) -> str | None:
    if value is None:
        return None
    text = _text(value)
    if len(text) > TRACE_ID_MAX_LENGTH:
        raise _Wrong(f"must be at most {TRACE_ID_MAX_LENGTH} characters")
    return text


_PARSERS: Mapping[str, Callable[[object], object]] = {
    "id": _parse_id,
    "type": _parse_type,
    "schema_version": _parse_schema_version,
    "occurred_at": _parse_occurred_at,
    "source": _parse_source,
    "key": _parse_key,
    "payload": _parse_payload,
    "trace_id": _parse_trace_id,
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as it travels: who, what, when, the ordering key and the type's payload."""

    id: str
    type: str
    schema_version: int
    occurred_at: datetime
    source: str
    key: str
    payload: dict[str, object]
    trace_id: str | None = None

    def __post_init__(self) -> None:
        # The wire format needs UTC; normalizing here keeps every way of building one honest.
        try:
            object.__setattr__(self, "occurred_at", _as_utc(self.occurred_at))
        except _Wrong as wrong:
            raise Invalid("The event is not valid.", [FieldError(("occurred_at",), str(wrong))]) from None

    @classmethod
    def new(
        cls,
        type: str,
        key: str,
        payload: Mapping[str, object],
        *,
        source: str,
        schema_version: int = 1,
        trace_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        """A fresh event with a new UUIDv7 id; `Invalid` naming the arguments that break the rules."""
        given = {
            "type": type,
            "schema_version": schema_version,
            "source": source,
            "key": key,
            "trace_id": trace_id,
        }
        errors = [error for name, value in given.items() if (error := _check(name, value))]
        now = datetime.now(UTC)
        try:
            moment = now if occurred_at is None else _as_utc(occurred_at)
        except _Wrong as wrong:
            errors.append(FieldError(("occurred_at",), str(wrong)))
        if errors:
            raise Invalid("The event is not valid.", errors)
        return cls(
            id=str(uuid7((now - _EPOCH) // _MILLISECOND)),
            type=type,
            schema_version=schema_version,
            occurred_at=moment,
            source=source,
            key=key,
            payload=dict(payload),
            trace_id=trace_id,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: `occurred_at` is RFC 3339 ending in `Z` (microseconds only when not zero)."""
        return {
            "id": self.id,
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat().removesuffix("+00:00") + "Z",
            "source": self.source,
            "key": self.key,
            "payload": self.payload,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Envelope:
        """The envelope in `data` (as `as_dict` makes it); `Invalid` naming every field that is wrong."""
        if not isinstance(data, Mapping):
            raise Invalid("The event is not valid.", [FieldError(("body",), "must be a JSON object")])
        errors = []
        if not data.keys() <= _PARSERS.keys():
            errors = [FieldError(("body", name), "unknown field") for name in data if name not in _PARSERS]
        parsed: dict[str, object] = {}
        for name, parse in _PARSERS.items():
            if name not in data:
                if name in ENVELOPE_REQUIRED:
                    errors.append(FieldError(("body", name), "required"))
                continue
            try:
                parsed[name] = parse(data[name])
            except _Wrong as wrong:
                errors.append(FieldError(("body", name), str(wrong)))
        if errors:
            raise Invalid("The event is not valid.", errors)
        return cls(**parsed)  # type: ignore[arg-type]


def _check(name: str, value: object) -> FieldError | None:
    try:
        _PARSERS[name](value)
    except _Wrong as wrong:
        return FieldError((name,), str(wrong))
    return None
