"""What the stream processors do with a micro-batch. Each is idempotent: a redelivered batch
changes nothing (event ids are primary keys; invalidating twice is invalidating once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from uuid import UUID

from sophia.cache import TieredCache
from sophia.cache.catalog import ACTIVE_DEALS_TAG, ANALYTICS_TAG, catalog_changed
from sophia.core.errors import Unavailable
from sophia.core.events import Envelope
from sophia.database import Database, analytics, audit, enrichment, events, outbox
from sophia.database.reprocess import REENRICH
from sophia.ml.embeddings import MODEL_ID
from sophia.ml.enrichment import Enricher
from sophia.shared.logging import get_logger

log = get_logger(__name__)

Sink = Callable[[list[Envelope]], Awaitable[None]]
RawSink = Callable[[list[bytes]], Awaitable[None]]
"""A sink of the messages' bytes as they are, for a consumer whose spec says `raw`."""

ENRICHED = frozenset({"record.upserted", REENRICH})
RECORD_CHANGES = frozenset({"record.upserted", "record.deleted"})
VIEW_REFRESHED = "view.refreshed"
AUDITED = frozenset({*RECORD_CHANGES, "audit.entry"})
CONVERSATIONS = frozenset({"call", "message"})


def fan_out(sinks: Mapping[str, Sink]) -> Sink:
    """Several idempotent sinks of one stream behind one consumer: each delivery is fetched,
    decoded and acked once instead of once a sink, and every sink gets every batch, at once.

    Every sink runs to its end even when another fails; the batch then fails with the first error,
    an `Unavailable` first (a dependency down: the processor retries the batch later, dead-letters
    nothing). Retried, it runs every sink again, the ones that had succeeded too: they are
    idempotent. A message dead-lettered after its last delivery is missed only by the sinks that
    failed on it (the others applied it in an earlier attempt)."""

    async def sink(batch: list[Envelope]) -> None:
        results = await asyncio.gather(*(each(batch) for each in sinks.values()), return_exceptions=True)
        failures = {name: result for name, result in zip(sinks, results, strict=True) if result is not None}
        if not failures:
            return
        for name, error in failures.items():
            log.warning("sink_failed", sink=name, error=repr(error))
        errors = list(failures.values())
        raise next((error for error in errors if isinstance(error, Unavailable)), errors[0])

    return sink


def store_events(database: Database) -> RawSink:
    """User and system events into `sophia_core.events`: their JSON, parsed by PostgreSQL."""

    async def sink(batch: list[bytes]) -> None:
        async with database.connection() as connection, connection.transaction():
            await events.store(connection, batch)

    return sink


def invalidate_caches(cache: TieredCache, max_keys: int) -> Sink:
    """Catalog changes drop the records and lists they touch from Redis and every API's L1.

    The API that made a write already dropped its own L1 at once; this is the path that reaches
    every instance even when that API's own publish did not (it died, or Redis blinked)."""

    async def sink(batch: list[Envelope]) -> None:
        changes = [envelope for envelope in batch if envelope.type in RECORD_CHANGES]  # not reenrich
        record_ids = [UUID(str(envelope.payload["id"])) for envelope in changes]
        scopes = [
            (str(envelope.payload["source_system"]), str(envelope.payload["kind"])) for envelope in changes
        ]
        await catalog_changed(cache, record_ids, scopes, max_keys=max_keys)
        if any(envelope.type == VIEW_REFRESHED for envelope in batch):  # refreshed by another process
            await cache.invalidate(tags=[ACTIVE_DEALS_TAG])

    return sink


def update_analytics(database: Database, cache: TieredCache) -> Sink:
    """Deal, call and message changes, and the models' predictions of calls and messages, move the
    analytics summaries (`sophia.database.analytics`: pipeline, trends, activity per company): in any
    order, any number of times, to the same end. The cached answers that read them are dropped after,
    then one `analytics.updated` says so (the real-time `analytics` channel): whoever reacts to it
    reads fresh answers. Its own event is no change of the summaries: it passes."""

    async def sink(batch: list[Envelope]) -> None:
        deals: list[UUID] = []
        talks: list[UUID] = []  # calls and messages changed, or predicted again
        changed_talks: list[UUID] = []  # those of them whose record changed
        for envelope in batch:
            payload = envelope.payload
            if envelope.type in RECORD_CHANGES and payload.get("kind") == "deal":
                deals.append(UUID(str(payload["id"])))
            elif envelope.type in RECORD_CHANGES and payload.get("kind") in CONVERSATIONS:
                talks.append(UUID(str(payload["id"])))
                changed_talks.append(talks[-1])
            elif envelope.type == "ml.prediction" and payload.get("task") in ("sentiment", "classification"):
                talks.append(UUID(str(payload["record_id"])))
        if not deals and not talks:
            return
        newest = max(envelope.occurred_at for envelope in batch)
        records = [*deals, *changed_talks]
        async with database.connection() as connection:
            applied = await analytics.apply_deal_changes(connection, deals, newest) if deals else None
            moved = await analytics.apply_conversation_changes(connection, talks, newest)
            # a deal's company moves the calls that name it: those next, in a transaction of their own
            following = await analytics.apply_activity_changes(connection, records, newest)
            if following:
                await analytics.apply_activity_changes(connection, following)
        if moved or records or (applied is not None and (applied.deals or applied.stage_changes)):
            await cache.invalidate(tags=[ANALYTICS_TAG])
            deals_moved = applied.deals if applied is not None else 0
            async with database.connection() as connection:
                await outbox.analytics_updated(connection, newest, deals=deals_moved, conversations=moved)

    return sink


def enrich_records(database: Database, enricher: Enricher, model_version: str) -> Sink:
    """Changed records of the kinds with text get their embedding and labels written back (newest
    version wins), with `ml.prediction` events in the same transaction."""

    async def sink(batch: list[Envelope]) -> None:
        ids = {
            UUID(str(envelope.payload["id"]))
            for envelope in batch
            if envelope.type in ENRICHED and envelope.payload.get("kind") in enricher.kinds
        }
        if not ids:
            return
        async with database.connection() as connection:
            records = await enrichment.live_records(connection, sorted(ids), model_version)
        results = await asyncio.to_thread(enricher.enrich, records)  # the model, off the event loop
        async with database.connection() as connection, connection.transaction():
            await enrichment.write(connection, results, MODEL_ID, model_version, enricher.versions)

    return sink


def append_audit(database: Database) -> Sink:
    """Catalog changes and admin actions onto the audit trail's hash chain."""

    async def sink(batch: list[Envelope]) -> None:
        # what changed something: a catalog write or an admin action (a view refresh asked for is
        # audited as the admin action it is; reenrich and the refresh's own event change no record)
        entries = [audit_entry(envelope) for envelope in batch if envelope.type in AUDITED]
        async with database.connection() as connection, connection.transaction():
            await audit.append(connection, entries)

    return sink


def audit_entry(envelope: Envelope) -> audit.AuditEntry:
    payload = envelope.payload
    if envelope.type == "audit.entry":  # an admin action: it says who did what itself
        details = payload.get("details")
        return audit.AuditEntry(
            event_id=UUID(envelope.id),
            occurred_at=datetime.fromisoformat(str(payload["at"])),
            actor=str(payload["actor"]),
            action=str(payload["action"]),
            target=str(payload["target"]),
            details=details if isinstance(details, dict) else {},
        )
    return audit.AuditEntry(  # a catalog change, by the key that wrote it (or by Sophia itself)
        event_id=UUID(envelope.id),
        occurred_at=envelope.occurred_at,
        actor=str(payload.get("actor") or envelope.source),
        action=envelope.type,
        target=envelope.key,
        details=dict(payload),
    )
