"""The workers process as `sophia up` runs it: events and catalog writes flow to their sinks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from app_clients import app_client
from nats.js.errors import NotFoundError
from waiting import eventually

from sophia.database import Database, jobs, keys
from sophia.events.codec import unpack
from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs
from sophia.shared.settings import Settings
from sophia.workers import __main__ as workers_main
from sophia.workers.__main__ import _reenrich_once_per_models_served, run_workers
from sophia.workers.jobs import REEMBED_RECORDS, JobQueue, jobs_stream


@contextlib.asynccontextmanager
async def running_workers(settings: Settings, url: str, **overrides) -> AsyncIterator[Stack]:
    """The workers running on the database at `url` (a migrated one of the test's own; an admin
    key is added to it) until the block ends, then stopped and drained."""
    own = settings.model_copy(update={"database_url": url, "outbox_poll_s": 0.2, **overrides})
    async with Database(own) as database:
        async with database.connection() as connection:
            _, secret = await keys.create(connection, f"workers-test-{uuid.uuid4().hex[:8]}", "admin")
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(own, stop))
        try:
            yield Stack(own, database, secret)
        finally:
            stop.set()
            await asyncio.wait_for(workers, 15)


@dataclass(frozen=True)
class Stack:
    settings: Settings
    database: Database
    secret: str


def counted(database: Database, query: str, *args: object):
    async def check() -> bool:
        async with database.connection() as connection:
            return bool(await connection.fetchval(query, *args))

    return check


@pytest.mark.e2e  # the workers process end to end, models included: the e2e tier
async def test_events_reach_postgres_and_catalog_writes_reach_the_audit_trail(own_streams, migrated_database):
    async with running_workers(own_streams, await migrated_database()) as stack:
        async with app_client(stack.settings, stack.secret) as client:
            event = {"type": "user.event", "key": "u-1", "payload": {"name": "deal.viewed"}}
            accepted = await client.post("/api/v1/events", json=[event])
            assert accepted.status_code == 202, accepted.text
            event_id = accepted.json()["ids"][0]
            written = await client.put(
                "/api/v1/records/wsrc/deal/1", json={"data": {"v": 1, "dealstage": "qualifiedtobuy"}}
            )
            assert written.status_code == 201
        database = stack.database
        await eventually(
            counted(database, "SELECT count(*) FROM sophia_core.events WHERE id = $1", uuid.UUID(event_id)),
            20,
        )
        await eventually(
            counted(database, "SELECT count(*) FROM sophia_core.audit_log WHERE target = 'wsrc/deal/1'"), 20
        )
        async with database.connection() as connection:  # attributed to the key that wrote, not its secret
            actor = await connection.fetchval(
                "SELECT actor FROM sophia_core.audit_log WHERE target = 'wsrc/deal/1'"
            )
        assert actor == f"key/{stack.secret.split('_')[1]}"
        # the deal reaches the sales summaries, their freshness moved forward
        await eventually(
            counted(
                database,
                "SELECT count(*) FROM sophia_analytics.deal_summary WHERE source_system = 'wsrc' "
                "AND stage = 'qualifiedtobuy' AND deals = 1",
            ),
            20,
        )
        await eventually(counted(database, "SELECT as_of > '-infinity' FROM sophia_analytics.freshness"), 20)
        # the admin action (the key made above): another stream, its own consumer
        await eventually(
            counted(database, "SELECT count(*) FROM sophia_core.audit_log WHERE action = 'key.created'"), 20
        )


async def predictions_announced(nats: NatsConnection, settings: Settings, count: int) -> bool:
    """Whether the settings' ml-predictions stream holds `count` events (it is made by the relay,
    which packs a subject's events several to a message)."""
    js = await nats.jetstream()
    name = stream_specs(settings)["ml-predictions"].name
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return False
    if int(info.state.messages) == 0:
        return False
    events = 0
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        events += len(unpack((await js.get_msg(name, sequence)).data))
    return events >= count


@pytest.mark.e2e  # the workers process end to end, models included: the e2e tier
async def test_with_the_models_a_catalog_write_is_enriched_and_found_by_meaning(
    own_streams, migrated_database
):
    """The whole path, each piece real: PUT a record -> outbox -> relay -> NATS -> the workers'
    ml-enrichment consumer (the model) -> record_predictions + record_embeddings -> the
    ml.prediction events relayed -> POST /api/v1/search finds it by a paraphrase."""
    async with (
        running_workers(own_streams, await migrated_database(), ml_enabled=True) as stack,
        app_client(stack.settings, stack.secret) as client,
    ):
        texts = {
            "m-1": "The nightly Salesforce sync failed again and nobody from support has replied.",
            "m-2": "Lunch on Friday? The new place across the street looks good.",
        }
        for external_id, text in texts.items():
            put = await client.put(
                f"/api/v1/records/chat/message/{external_id}", json={"data": {"text": text}}
            )
            assert put.status_code == 201, put.text
        async with NatsConnection(stack.settings.nats_url or "") as nats:  # 2 records x (labels, sentiment)
            await eventually(
                lambda: predictions_announced(nats, stack.settings, 4), timeout_s=30, poll_s=0.05
            )
        async with stack.database.connection() as connection:
            labels = await connection.fetchval(
                "SELECT p.prediction->'labels' FROM sophia_core.record_predictions p "
                "JOIN sophia_core.unified_data_catalog c ON c.id = p.record_id "
                "WHERE c.external_id = 'm-1' AND p.task = 'classification'"
            )
            stored = await connection.fetch(
                "SELECT task, count(*) FROM sophia_core.record_predictions GROUP BY task ORDER BY task"
            )
        assert "support_issue" in labels
        assert [tuple(row) for row in stored] == [("classification", 2), ("sentiment", 2)]
        # the predictions reach the sentiment trend (the analytics-ml consumer)
        await eventually(
            counted(
                stack.database,
                "SELECT sum(records) = 2 FROM sophia_analytics.sentiment_summary WHERE kind = 'message'",
            ),
            20,
        )
        found = await client.post(
            "/api/v1/search", json={"q": "integration broken, waiting on the help desk", "k": 2}
        )
    assert found.status_code == 200, found.text
    assert found.json()["mode"] == "hybrid"
    assert found.json()["items"][0]["record"]["external_id"] == "m-1"


@pytest.mark.e2e  # the workers process end to end, models included: the e2e tier
async def test_records_labeled_by_one_classifier_are_labeled_again_when_another_serves(
    own_streams, migrated_database, tmp_path
):
    """The built-in head labels a message; the workers restart serving zero-shot on a label set of
    one's own, and their reembed job has the message labeled by it (the embedding is current)."""
    url = await migrated_database()
    classification = (
        "SELECT p.model_version, p.prediction FROM sophia_core.record_predictions p "
        "JOIN sophia_core.unified_data_catalog c ON c.id = p.record_id "
        "WHERE c.external_id = 'm-1' AND p.task = 'classification'"
    )
    labeled = f"SELECT count(*) FROM ({classification}) AS labels"
    async with running_workers(own_streams, url, ml_enabled=True) as stack:
        async with app_client(stack.settings, stack.secret) as client:
            text = {"text": "They asked for a discount before renewing the annual plan."}
            assert (
                await client.put("/api/v1/records/chat/message/m-1", json={"data": text})
            ).status_code == 201
        await eventually(counted(stack.database, labeled), timeout_s=30, poll_s=0.05)
        async with stack.database.connection() as connection:
            by_head = await connection.fetchrow(classification)
    labels = tmp_path / "labels.json"
    labels.write_text('{"pricing": ["Price, discounts, quotes and what the plan costs."]}')
    async with running_workers(own_streams, url, ml_enabled=True, ml_labels_file=labels) as stack:

        async def relabeled() -> bool:
            async with stack.database.connection() as connection:
                return (await connection.fetchrow(classification))["model_version"] != by_head[
                    "model_version"
                ]

        await eventually(relabeled, timeout_s=30, poll_s=0.05)
        async with stack.database.connection() as connection:
            by_zero_shot = await connection.fetchrow(classification)
    assert "+head-" in by_head["model_version"]
    assert "+zero-shot-" in by_zero_shot["model_version"]
    assert set(by_zero_shot["prediction"]["scores"]) == {"pricing"}


@pytest.mark.parametrize("unset", ["database_url", "redis_url", "nats_url"])
async def test_the_workers_refuse_to_start_without_every_engine_url(settings, unset):
    with pytest.raises(RuntimeError, match="SOPHIA_DATABASE_URL, _REDIS_URL and _NATS_URL must be set"):
        await run_workers(settings.model_copy(update={unset: None}), asyncio.Event())


async def test_a_reembed_that_cannot_reach_nats_is_left_in_postgres_for_the_sweep(
    own_streams, database, logs_of
):
    version = f"model-{uuid.uuid4().hex[:8]}"
    logs = logs_of(workers_main)
    # Nothing listens there: whatever the timeout, NATS never answers, so a short one proves as much.
    async with NatsConnection("nats://127.0.0.1:1", timeout_s=0.05) as away:
        queue = JobQueue(database, away, jobs_stream(own_streams))
        await _reenrich_once_per_models_served(queue, version, {"classification": "c1"})
    async with database.connection() as connection:
        job = await jobs.find(connection, f"{REEMBED_RECORDS}:{version};classification=c1")
    assert job is not None
    assert (job.kind, job.status, job.published_at) == (REEMBED_RECORDS, "queued", None)
    [warning] = logs.events("reembed_not_submitted")
    assert str(warning["error"]).startswith("NATS is unreachable")
