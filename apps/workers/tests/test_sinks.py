"""The processors' sinks against real PostgreSQL and Redis: each stores or drops once per event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as redis
from waiting import eventually

from sophia.cache import CacheConfig, TieredCache
from sophia.cache.catalog import (
    ACTIVE_DEALS_TAG,
    ANALYTICS_TAG,
    active_deals_key,
    list_key,
    list_tags,
    record_key,
)
from sophia.core.errors import Invalid, Unavailable
from sophia.core.events import Envelope, uuid7
from sophia.core.records import RecordFilter, RecordKey
from sophia.database import Database, audit, catalog, events, outbox
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.workers.jobs import JobQueue, announce_deal_changes, jobs_stream
from sophia.workers.relay import envelope_of
from sophia.workers.sinks import (
    Sink,
    append_audit,
    fan_out,
    invalidate_caches,
    store_events,
    update_analytics,
)


def user_event(key: str) -> Envelope:
    return Envelope.new("user.event", key, {"name": "deal.viewed"}, source="api")


def record_event(
    source_system: str,
    external_id: str,
    record_id: uuid.UUID | None = None,
    event_type: str = "record.upserted",
) -> Envelope:
    record_id = record_id or uuid.uuid4()
    payload = {
        "id": str(record_id),
        "source_system": source_system,
        "kind": "deal",
        "external_id": external_id,
        "version": 2,
    }
    return Envelope.new(event_type, f"{source_system}/deal/{external_id}", payload, source="catalog")


async def test_events_are_stored_once_however_often_delivered(database):
    batch = [user_event(f"u-{n}") for n in range(5)]
    sink = store_events(database)
    await sink([encode(e) for e in batch])
    await sink([encode(e) for e in [*batch, batch[0]]])  # redelivered, with a duplicate inside the batch
    async with database.connection() as connection:
        assert await events.count(connection, [e.id for e in batch]) == 5
        row = await connection.fetchrow(
            "SELECT type, key, payload, source FROM sophia_core.events WHERE id = $1", uuid.UUID(batch[0].id)
        )
    assert tuple(row) == ("user.event", "u-0", {"name": "deal.viewed"}, "api")


async def test_events_keep_every_field_as_the_envelope_had_it(database):
    envelope = Envelope.new(
        "system.event",
        "sync-1",
        {"name": "sync.finished", "attributes": {"n": 12345678901234567890, "text": "é ✓"}},
        source="hubspot",
        trace_id="trace-1",
    )
    await store_events(database)([encode(envelope)])
    async with database.connection() as connection:
        row = await connection.fetchrow(
            "SELECT id, type, source, key, occurred_at, payload, trace_id FROM sophia_core.events "
            "WHERE id = $1",
            uuid.UUID(envelope.id),
        )
    assert tuple(row) == (
        uuid.UUID(envelope.id),
        "system.event",
        "hubspot",
        "sync-1",
        envelope.occurred_at,
        envelope.payload,
        "trace-1",
    )


@pytest.mark.parametrize(
    "document",
    [
        b"{not json",
        b'{"id": "not-a-uuid", "type": "user.event", "source": "api", "key": "k", '
        b'"occurred_at": "2026-11-25T10:00:00Z", "payload": {}}',
        b'{"id": "019ab8c1-8d2e-7c3a-9b1e-0123456789ab", "type": "user.event", "source": "api", '
        b'"key": "k", "occurred_at": "2026-11-25T10:00:00Z", "payload": [1]}',
        b'{"id": "019ab8c1-8d2e-7c3a-9b1e-0123456789ac", "source": "api", "key": "k", '
        b'"occurred_at": "2026-11-25T10:00:00Z", "payload": {}}',
    ],
    ids=["not-json", "bad-id", "payload-not-object", "no-type"],
)
async def test_a_document_that_is_no_envelope_fails_its_batch_and_stores_nothing(database, document):
    good = user_event("u-good")
    with pytest.raises((Invalid, asyncpg.PostgresError)):  # a refused value, or a NULL where none may be
        await store_events(database)([encode(good), document])
    async with database.connection() as connection:
        assert await events.count(connection, [good.id]) == 0


async def test_catalog_changes_drop_the_record_and_its_lists_from_every_process(settings):
    config = CacheConfig.from_settings(settings)
    api_client, worker_client = (redis.Redis.from_url(settings.redis_url) for _ in range(2))
    source = f"sink{uuid.uuid4().hex[:8]}"
    record_id = uuid.uuid4()
    where = RecordFilter(source, "deal")
    async with (
        TieredCache(api_client, config, name="api") as api,
        TieredCache(worker_client, config, name="workers") as worker,
    ):

        async def load() -> bytes:
            return b"{}"

        await api.get_or_load(record_key(record_id), load)
        await api.get_or_load(list_key(where, None, 50), load, tags=list_tags(where))
        await invalidate_caches(worker, max_keys=100)([record_event(source, "d-1", record_id)])
        await eventually(lambda: not len(api.l1), timeout_s=2)
    await api_client.aclose()
    await worker_client.aclose()


async def test_a_record_to_enrich_again_drops_nothing_from_the_caches(settings):
    config = CacheConfig.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url)
    record_id = uuid.uuid4()
    async with TieredCache(client, config, name="workers") as cache:

        async def load() -> bytes:
            return b"{}"

        await cache.get_or_load(record_key(record_id), load)
        replay = record_event(f"sink{uuid.uuid4().hex[:8]}", "d-1", record_id, event_type="record.reenrich")
        await invalidate_caches(cache, max_keys=100)([replay])

        async def reload() -> bytes:
            return b'{"loaded": "again"}'

        assert (await cache.get_or_load(record_key(record_id), reload)).value == b"{}"  # still cached
    await client.aclose()


async def test_a_view_refreshed_elsewhere_drops_its_pages_and_is_not_audited_again(settings, database):
    config = CacheConfig.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url)
    refreshed = Envelope.new(
        "view.refreshed",
        "view/active_deals_mv",
        {"view": "active_deals_mv", "at": "2026-01-15T09:30:00Z"},
        source="catalog",
    )
    async with TieredCache(client, config, name="workers") as cache:

        async def load() -> bytes:
            return b"{}"

        await cache.get_or_load(active_deals_key(None, 50), load, tags=(ACTIVE_DEALS_TAG,))
        await invalidate_caches(cache, max_keys=100)([refreshed])

        async def reload() -> bytes:
            return b'{"loaded": "again"}'

        assert (await cache.get_or_load(active_deals_key(None, 50), reload)).value == b'{"loaded": "again"}'
    await client.aclose()
    async with database.connection() as connection:
        before = await connection.fetchval("SELECT count(*) FROM sophia_core.audit_log")
    await append_audit(database)([refreshed])
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM sophia_core.audit_log") == before


async def test_catalog_changes_and_admin_actions_land_on_the_audit_chain_once(database):
    change = record_event("auditsrc", "d-1")
    action = Envelope(
        id=str(uuid7()),
        type="audit.entry",
        schema_version=1,
        occurred_at=datetime.now(UTC),
        source="catalog",
        key="key/abcd1234",
        payload={
            "actor": "cli",
            "action": "key.revoked",
            "target": "key/abcd1234",
            "at": "2026-11-25T12:00:00+00:00",
            "details": {},
        },
    )
    replay = record_event("auditsrc", "d-1", event_type="record.reenrich")  # for the models: no change
    sink = append_audit(database)
    await sink([change, replay, action])
    await sink([change, replay, action])
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT actor, action, target FROM sophia_core.audit_log "
            "WHERE event_id = ANY($1::uuid[]) ORDER BY seq",
            [uuid.UUID(change.id), uuid.UUID(replay.id), uuid.UUID(action.id)],
        )
        async with connection.transaction():
            verdicts = [v async for v in audit.verify(connection)]
    assert [tuple(row) for row in rows] == [
        ("catalog", "record.upserted", "auditsrc/deal/d-1"),
        ("cli", "key.revoked", "key/abcd1234"),
    ]
    assert verdicts[-1][1] is None


def analytics_updated() -> Envelope:
    payload = {"as_of": "2026-01-15T09:30:00+00:00", "deals": 1, "conversations": 0}
    return Envelope.new("analytics.updated", "analytics/summaries", payload, source="catalog")


async def outbox_updates(database: Database) -> list[outbox.OutboxEvent]:
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT id, topic, event_type, key, payload, created_at FROM sophia_core.outbox "
            "WHERE event_type = 'analytics.updated' ORDER BY id"
        )
    return [outbox.OutboxEvent(*row) for row in rows]


async def test_a_batch_that_moves_the_analytics_drops_their_answers_then_says_so_once(
    settings, migrated_database
):
    own = settings.model_copy(update={"database_url": await migrated_database()})
    client = redis.Redis.from_url(own.redis_url)
    page = f"analytics-{uuid.uuid4().hex}"
    async with (
        Database(own) as database,
        TieredCache(client, CacheConfig.from_settings(own), name="workers") as cache,
    ):
        async with database.connection() as connection:
            written = [
                await catalog.upsert(connection, RecordKey("moving", "deal", f"d-{n}"), {"amount": "10"})
                for n in range(3)
            ]

        async def load() -> bytes:
            return b"{}"

        async def reload() -> bytes:
            return b'{"loaded": "again"}'

        await cache.get_or_load(page, load, tags=(ANALYTICS_TAG,))
        batch = [record_event("moving", f"d-{n}", record.id) for n, record in enumerate(written)]
        sink = update_analytics(database, cache)
        await sink(batch)
        assert (await cache.get_or_load(page, reload)).value == b'{"loaded": "again"}'
        [update] = await outbox_updates(database)
        await sink([envelope_of(update)])  # its own event, delivered back: it passes, says nothing
        assert len(await outbox_updates(database)) == 1
    await client.aclose()
    assert (update.topic, update.key) == ("records", "analytics/summaries")
    assert (update.payload["deals"], update.payload["conversations"]) == (3, 0)  # one event for the batch
    newest = max(envelope.occurred_at for envelope in batch)
    assert datetime.fromisoformat(str(update.payload["as_of"])) == newest


async def test_an_analytics_update_passes_the_other_consumers_of_records(settings, database):
    """No record or list is dropped, nothing audited, no deal refresh asked for, and the analytics
    consumer itself needs no database for it (an unopened one would refuse)."""
    update = analytics_updated()
    unopened = Database(settings)
    client = redis.Redis.from_url(settings.redis_url)
    record_id = uuid.uuid4()
    async with TieredCache(client, CacheConfig.from_settings(settings), name="workers") as cache:

        async def load() -> bytes:
            return b"{}"

        async def reload() -> bytes:
            return b'{"loaded": "again"}'

        await cache.get_or_load(record_key(record_id), load)
        await invalidate_caches(cache, max_keys=100)([update])
        assert (await cache.get_or_load(record_key(record_id), reload)).value == b"{}"  # still cached
        await update_analytics(unopened, cache)([update])
    await client.aclose()
    queue = JobQueue(unopened, NatsConnection(settings.nats_url or ""), jobs_stream(settings))
    await announce_deal_changes(queue, 1.0)([update])
    async with database.connection() as connection:
        before = await connection.fetchval("SELECT count(*) FROM sophia_core.audit_log")
    await append_audit(database)([update])
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM sophia_core.audit_log") == before


async def audited(database: Database, envelopes: list[Envelope]) -> int:
    async with database.connection() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM sophia_core.audit_log WHERE event_id = ANY($1::uuid[])",
            [uuid.UUID(envelope.id) for envelope in envelopes],
        )


@pytest.mark.parametrize(
    ("errors", "raised"),
    [
        ((ValueError("bad payload"), Unavailable("Redis is unreachable")), Unavailable),
        ((ValueError("bad payload"), None), ValueError),
    ],
    ids=["an-outage-first", "the-first-error"],
)
async def test_sinks_behind_one_consumer_each_get_the_batch_whatever_the_others_do(database, errors, raised):
    """Every sink runs to its end; the batch fails with an outage before any other error (retried
    later, never dead-lettered), and a retry runs every sink again without changing what was done."""
    batch = [record_event("fanout", "d-1"), record_event("fanout", "d-2")]
    calls: list[str] = []

    def failing(name: str, error: Exception | None) -> Sink:
        async def sink(got: list[Envelope]) -> None:
            calls.append(name)
            assert got == batch
            await asyncio.sleep(0)
            if error is not None:
                raise error

        return sink

    sinks = {"first": failing("first", errors[0]), "audit": append_audit(database)}
    sinks["last"] = failing("last", errors[1])
    followers = fan_out(sinks)
    with pytest.raises(raised):
        await followers(batch)
    assert sorted(calls) == ["first", "last"]
    assert await audited(database, batch) == 2
    with pytest.raises(raised):
        await followers(batch)  # delivered again: the audit is not written twice
    assert await audited(database, batch) == 2
    await fan_out({"audit": append_audit(database)})(batch)
    assert await audited(database, batch) == 2
