"""The transactional outbox: every catalog write adds its events in the same statement, and the
relay takes them out once JetStream has them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from sophia.database.pool import Connection

RECORDS_TOPIC = "records"
AUDIT_TOPIC = "audit-logs"
NOTIFY_CHANNEL = "sophia_outbox"
"""Where a trigger announces new rows (migration 0006)."""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row of the backlog."""

    id: int
    topic: str
    event_type: str
    key: str
    payload: dict[str, object]
    created_at: datetime


async def audit(
    connection: Connection, actor: str, action: str, target: str, details: dict[str, object]
) -> None:
    """Record an admin action for the audit trail, in the caller's transaction (an `audit.entry`)."""
    await connection.execute(
        f"""INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
            VALUES ('{AUDIT_TOPIC}', 'audit.entry', $3,
                    jsonb_build_object('actor', $1::text, 'action', $2::text, 'target', $3::text,
                                       'at', to_jsonb(now()), 'details', $4::text::jsonb))""",
        actor,
        action,
        target,
        orjson.dumps(details).decode(),  # text: callers on bare asyncpg connections have no jsonb codec
    )


async def view_refreshed(connection: Connection, view: str) -> None:
    """Say, in the caller's transaction, that `view` was refreshed (a `view.refreshed` on records)."""
    await connection.execute(
        f"""INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
            VALUES ('{RECORDS_TOPIC}', 'view.refreshed', 'view/' || $1::text,
                    jsonb_build_object('view', $1::text, 'at', to_jsonb(now())))""",
        view,
    )


ANALYTICS_KEY = "analytics/summaries"


async def analytics_updated(
    connection: Connection, as_of: datetime, *, deals: int, conversations: int
) -> None:
    """Say that the analytics summaries moved (an `analytics.updated` on records): `deals` deals and
    `conversations` calls and messages, changes up to `as_of`."""
    await connection.execute(
        f"""INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
            VALUES ('{RECORDS_TOPIC}', 'analytics.updated', '{ANALYTICS_KEY}',
                    jsonb_build_object('as_of', to_jsonb($1::timestamptz), 'deals', $2::int,
                                       'conversations', $3::int))""",
        as_of,
        deals,
        conversations,
    )


async def claim(connection: Connection, limit: int) -> list[OutboxEvent]:
    """The oldest `limit` events no other relay holds, locked until this transaction ends.

    Call inside a transaction; `delete` what was published before it commits."""
    rows = await connection.fetch(
        "SELECT id, topic, event_type, key, payload, created_at FROM sophia_core.outbox "
        "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [OutboxEvent(*row) for row in rows]


async def delete(connection: Connection, ids: Sequence[int]) -> None:
    await connection.execute("DELETE FROM sophia_core.outbox WHERE id = ANY($1::bigint[])", list(ids))


EXACT_DEPTH_UP_TO = 10_000
"""Past this many events, the backlog is estimated: counting 2M rows would take the probe a second."""


@dataclass(frozen=True, slots=True)
class Depth:
    """Events waiting: counted up to `EXACT_DEPTH_UP_TO`, estimated above (`exact` False)."""

    events: int
    exact: bool


async def depth(connection: Connection, exact_up_to: int = EXACT_DEPTH_UP_TO) -> Depth:
    """The backlog at a cost that does not grow with it: a count that stops at `exact_up_to`, then
    the span of the waiting ids (two index probes; an upper bound where ids left out of order)."""
    counted = int(
        await connection.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM sophia_core.outbox LIMIT $1) AS waiting", exact_up_to
        )
    )
    if counted < exact_up_to:
        return Depth(counted, exact=True)
    span = await connection.fetchval("SELECT max(id) - min(id) + 1 FROM sophia_core.outbox")
    return Depth(max(int(span or 0), counted), exact=False)


def outbox_insert(written: str, event_type: str, actor: str = "NULL") -> str:
    """A CTE body inserting one `records` event per row of the CTE named `written`.

    `written` must expose id, source_system, kind, external_id and version. The payload is small
    on purpose: consumers that need the data read the record; the event says what changed. `actor`
    is the SQL (a `$n` parameter) of who wrote, e.g. `key/<prefix>`: in the payload when not null.
    """
    return f"""
        INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
        SELECT '{RECORDS_TOPIC}', '{event_type}',
               w.source_system || '/' || w.kind || '/' || w.external_id,
               jsonb_strip_nulls(jsonb_build_object(
                   'id', w.id, 'source_system', w.source_system, 'kind', w.kind,
                   'external_id', w.external_id, 'version', w.version, 'actor', {actor}::text))
        FROM {written} AS w
    """


AuditEntry = tuple[str, str, str, dict[str, object], datetime]
"""(actor, action, target, details, when it happened)."""


async def audit_many(connection: Connection, entries: Sequence[AuditEntry]) -> None:
    """`audit` for many entries at once, each with its own time: one statement, in the caller's
    transaction (what a busy caller, such as the MCP gateway's tool calls, buffers and flushes)."""
    await connection.executemany(
        f"""INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
            VALUES ('{AUDIT_TOPIC}', 'audit.entry', $3,
                    jsonb_build_object('actor', $1::text, 'action', $2::text, 'target', $3::text,
                                       'at', to_jsonb($5::timestamptz), 'details', $4::text::jsonb))""",
        [
            (actor, action, target, orjson.dumps(details).decode(), at)
            for actor, action, target, details, at in entries
        ],
    )
