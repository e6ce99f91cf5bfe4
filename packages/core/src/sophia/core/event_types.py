"""The event types as data: each one's stream, schema version and payload JSON Schema, with an
example; `python -m sophia.core.event_types` prints `docs/events.md`, generated from them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from sophia.core.events import (
    ENVELOPE_PROPERTIES,
    ENVELOPE_REQUIRED,
    ENVELOPE_SCHEMA,
    JSON_SCHEMA_DIALECT,
    KEY_MAX_LENGTH,
    Envelope,
    uuid7,
)
from sophia.core.records import EXTERNAL_ID_MAX_LENGTH, EXTERNAL_ID_PATTERN, IDENTIFIER_PATTERN


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event: its stream, the JSON Schema (draft 2020-12) of its payload, an example."""

    name: str
    stream: str
    schema_version: int
    description: str
    key: str
    """What the envelope's `key` holds for this type: the unit within which order holds."""
    payload_schema: Mapping[str, object]
    example: Mapping[str, object]
    example_key: str
    example_source: str


def _payload_schema(
    name: str, required: list[str], properties: dict[str, object], *, closed: bool = True
) -> dict[str, object]:
    schema: dict[str, object] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{name} payload",
        "type": "object",
        "required": required,
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


_NAME = {"type": "string", "minLength": 1}
_OBJECT = {"type": "object"}
_RECORD_PROPERTIES: dict[str, object] = {
    "id": {"description": "The record's id.", "type": "string", "format": "uuid"},
    "source_system": {"type": "string", "pattern": IDENTIFIER_PATTERN},
    "kind": {"type": "string", "pattern": IDENTIFIER_PATTERN},
    "external_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": EXTERNAL_ID_MAX_LENGTH,
        "pattern": EXTERNAL_ID_PATTERN,
    },
    "version": {"description": "The record's version after this write.", "type": "integer", "minimum": 1},
    "actor": {
        "description": "Who wrote: `key/<prefix>` of the API key (never its secret); absent for "
        "writes of Sophia's own (jobs, the seed).",
        "type": "string",
        "maxLength": 64,
    },
}
_RECORD_REQUIRED = ["id", "source_system", "kind", "external_id", "version"]
_RECORD_KEY = "`source_system/kind/external_id`, the record's natural key"
_RECORD_EXAMPLE = {
    "id": "019b8a31-5c20-7d4e-9a51-6f0d2e8b4c17",
    "source_system": "hubspot",
    "kind": "deal",
    "external_id": "D-1001",
    "version": 4,
    "actor": "key/3f9a0c12",
}

_TYPES = (
    EventType(
        name="record.upserted",
        stream="records",
        schema_version=1,
        description=(
            "A catalog record was created or updated (one write, a bulk ingest, or an upsert that "
            "brings a deleted record back). Written to the outbox in the same transaction as the "
            "record; consumers that need the data read the record."
        ),
        key=_RECORD_KEY,
        payload_schema=_payload_schema("record.upserted", _RECORD_REQUIRED, _RECORD_PROPERTIES),
        example=_RECORD_EXAMPLE,
        example_key="hubspot/deal/D-1001",
        example_source="catalog",
    ),
    EventType(
        name="record.deleted",
        stream="records",
        schema_version=1,
        description="A catalog record was soft-deleted; `version` is its version after the delete.",
        key=_RECORD_KEY,
        payload_schema=_payload_schema("record.deleted", _RECORD_REQUIRED, _RECORD_PROPERTIES),
        example={**_RECORD_EXAMPLE, "version": 5},
        example_key="hubspot/deal/D-1001",
        example_source="catalog",
    ),
    EventType(
        name="record.reenrich",
        stream="records",
        schema_version=1,
        description=(
            "A catalog record to enrich again with the models now served (a `reembed_records` job "
            "re-emits it): nothing about the record changed, so only the ML enrichment acts on it; "
            "caches, the audit trail and the deal announcement let it pass."
        ),
        key=_RECORD_KEY,
        payload_schema=_payload_schema("record.reenrich", _RECORD_REQUIRED, _RECORD_PROPERTIES),
        example=_RECORD_EXAMPLE,
        example_key="hubspot/deal/D-1001",
        example_source="catalog",
    ),
    EventType(
        name="user.event",
        stream="user-events",
        schema_version=1,
        description=(
            "Something a user did, sent by a client: a `name`, the `user_id` when known and free-form "
            "`properties`. Other top-level fields are allowed."
        ),
        key="the user id (or a session id when the user is anonymous)",
        payload_schema=_payload_schema(
            "user.event",
            ["name"],
            {"name": _NAME, "properties": _OBJECT, "user_id": {**_NAME, "maxLength": KEY_MAX_LENGTH}},
            closed=False,
        ),
        example={"name": "deal.viewed", "user_id": "u-1842", "properties": {"deal": "D-1001"}},
        example_key="u-1842",
        example_source="webapp",
    ),
    EventType(
        name="system.event",
        stream="system-events",
        schema_version=1,
        description="Something that happened in a system (a deploy, a job, a degradation).",
        key="the emitting component, e.g. `api` or `workers/relay`",
        payload_schema=_payload_schema(
            "system.event",
            ["name"],
            {
                "name": _NAME,
                "severity": {"enum": ["debug", "info", "warning", "error"]},
                "attributes": _OBJECT,
            },
        ),
        example={
            "name": "cache.degraded",
            "severity": "warning",
            "attributes": {"reason": "redis unreachable"},
        },
        example_key="api",
        example_source="api",
    ),
    EventType(
        name="ml.prediction",
        stream="ml-predictions",
        schema_version=1,
        description="A model's result for a catalog record, published after it is written back.",
        key="the record's id",
        payload_schema=_payload_schema(
            "ml.prediction",
            ["record_id", "model", "model_version", "task", "result"],
            {
                "record_id": {"type": "string", "format": "uuid"},
                "model": _NAME,
                "model_version": _NAME,
                "task": {"enum": ["sentiment", "classification", "embedding"]},
                "result": _OBJECT,
            },
        ),
        example={
            "record_id": "019b8a31-5c20-7d4e-9a51-6f0d2e8b4c17",
            "model": "distilbert-sst2",
            "model_version": "1",
            "task": "sentiment",
            "result": {"label": "positive", "score": 0.97},
        },
        example_key="019b8a31-5c20-7d4e-9a51-6f0d2e8b4c17",
        example_source="ml",
    ),
    EventType(
        name="view.refreshed",
        stream="records",
        schema_version=1,
        description=(
            "An analytics view shows something new (`active_deals_mv`): deals changed in the last "
            "window (announced once a window while they change), or a refresh mended it, in the "
            "refresh's transaction. Its caches are dropped, and the real-time `deals` channel "
            "carries it beside the deal changes."
        ),
        key="`view/<name>`",
        payload_schema=_payload_schema(
            "view.refreshed", ["view", "at"], {"view": _NAME, "at": {"type": "string", "format": "date-time"}}
        ),
        example={"view": "active_deals_mv", "at": "2026-01-15T09:30:00Z"},
        example_key="view/active_deals_mv",
        example_source="catalog",
    ),
    EventType(
        name="analytics.updated",
        stream="records",
        schema_version=1,
        description=(
            "The analytics summaries moved (pipeline, trends, activity per company): written by the "
            "analytics consumer once per batch of changes it applied, after it dropped the cached "
            "answers that read them, so whoever reacts to it reads fresh ones. The real-time "
            "`analytics` channel carries it; the other consumers of `records` let it pass."
        ),
        key="`analytics/summaries`",
        payload_schema=_payload_schema(
            "analytics.updated",
            ["as_of", "deals", "conversations"],
            {
                "as_of": {
                    "description": "The time of the batch's newest change: the analytics API's `as_of` is "
                    "at least this from now on.",
                    "type": "string",
                    "format": "date-time",
                },
                "deals": {
                    "description": "Deals whose contributions to the summaries moved.",
                    "type": "integer",
                    "minimum": 0,
                },
                "conversations": {
                    "description": "Calls and messages whose contributions to the trends moved.",
                    "type": "integer",
                    "minimum": 0,
                },
            },
        ),
        example={"as_of": "2026-01-15T09:29:58.412+00:00", "deals": 12, "conversations": 3},
        example_key="analytics/summaries",
        example_source="catalog",
    ),
    EventType(
        name="audit.entry",
        stream="audit-logs",
        schema_version=1,
        description="One line of the append-only audit log: who did what to what, when.",
        key="the target",
        payload_schema=_payload_schema(
            "audit.entry",
            ["actor", "action", "target", "at"],
            {
                "actor": _NAME,
                "action": _NAME,
                "target": _NAME,
                "at": {"type": "string", "format": "date-time"},
                "details": _OBJECT,
            },
        ),
        example={
            "actor": "key:sk_live_ab12",
            "action": "record.delete",
            "target": "hubspot/deal/D-1001",
            "at": "2026-01-15T09:30:00Z",
            "details": {"version": 5},
        },
        example_key="hubspot/deal/D-1001",
        example_source="api",
    ),
)

EVENT_TYPES: Mapping[str, EventType] = MappingProxyType({event.name: event for event in _TYPES})
"""Every event type Sophia publishes, by name."""

_EXAMPLE_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
_EXAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def example_envelope(event_type: EventType) -> Envelope:
    """The documented example of `event_type`, the same on every call."""
    return Envelope(
        id=str(uuid7(int(_EXAMPLE_AT.timestamp() * 1000), tail=1 + list(EVENT_TYPES).index(event_type.name))),
        type=event_type.name,
        schema_version=event_type.schema_version,
        occurred_at=_EXAMPLE_AT,
        source=event_type.example_source,
        key=event_type.example_key,
        payload=dict(event_type.example),
        trace_id=_EXAMPLE_TRACE_ID,
    )


def _json_block(value: object) -> str:
    return "```json\n" + json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n```"


_INTRO = """\
# Events

<!-- Generated from `sophia.core.event_types` by `python -m sophia.core.event_types`; do not edit by hand.
packages/core/tests/test_events_docs.py fails when this file and the code disagree. -->

Every event on the bus is one JSON envelope (UTF-8) around a typed payload. A message carries one
envelope or several, one compact JSON document a line (NDJSON): the events API packs the events
of one subject together, up to 256 a message and about 128 KiB, since NATS and every consumer pay
per message, not per byte. A consumer reads a message's lines as its events, in order. The
catalog's events are written to the outbox in the transaction that changes the record, and the
relay publishes them the same way; the envelope's `id` is derived from the outbox row, so a
re-published event keeps its id, its message the same message id, and the broker drops the
duplicate.

Subjects are `<stream>.<partition>.<type>`, e.g. `records.3.record.upserted` (stream names take
`SOPHIA_EVENTS_STREAM_PREFIX` in front when it is set). The partition is a stable hash of the
envelope's `key` (blake2b) modulo the stream's partitions (`SOPHIA_EVENTS_PARTITIONS`, 10 by
default), so every event of one key lands on one subject and **order holds per key**, not across
keys.

`type` and `schema_version` together name the payload schema that applies; a breaking change to a
payload raises its type's schema version, so consumers can tell the shapes apart.

## Envelope

| field | meaning |
| --- | --- |
"""


def events_markdown() -> str:
    """The text of `docs/events.md`: the envelope, then each event type with its schema and an example."""
    rows = [
        f"| `{name}` | {spec['description']}{'' if name in ENVELOPE_REQUIRED else ' Optional.'} |"
        for name, spec in ENVELOPE_PROPERTIES.items()
    ]
    parts = [_INTRO + "\n".join(rows), "JSON Schema of the envelope:", _json_block(ENVELOPE_SCHEMA)]
    parts.append("## Event types\n\n| type | stream | schema version |\n| --- | --- | --- |")
    parts[-1] += "".join(
        f"\n| [`{name}`](#{name.replace('.', '')}) | `{event.stream}` | {event.schema_version} |"
        for name, event in EVENT_TYPES.items()
    )
    for name, event in EVENT_TYPES.items():
        parts += [
            f"### {name}",
            f"Stream `{event.stream}`, schema version {event.schema_version}. Key: {event.key}.",
            event.description,
            "Payload schema:",
            _json_block(event.payload_schema),
            "Example:",
            _json_block(example_envelope(event).as_dict()),
        ]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(events_markdown(), end="")
