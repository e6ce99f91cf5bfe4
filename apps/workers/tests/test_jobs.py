"""Background jobs against real JetStream and PostgreSQL: submitted once, run at least once, retried."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from metrics import sample
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from waiting import eventually

from sophia.core.errors import Invalid, NotFound, Unavailable
from sophia.core.events import Envelope
from sophia.database import Database, jobs
from sophia.database.jobs import Job
from sophia.events import consumer
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.dead_letter import dead_letter_spec
from sophia.events.streams import ensure_streams, stream_specs
from sophia.workers import job_runner
from sophia.workers.job_runner import JobRunner, RunnerSpec
from sophia.workers.jobs import (
    ANNOUNCE_ACTIVE_DEALS,
    REEMBED_RECORDS,
    REFRESH_ACTIVE_DEALS,
    REPROCESS_RECORDS,
    Handler,
    JobQueue,
    WorkQueueSpec,
    announce_deal_changes,
    default_handlers,
    jobs_stream,
    reembed_handler,
    reembed_key,
)
from sophia.workers.processor import ConsumerSpec, StreamProcessor


@pytest.fixture(scope="module")
async def db(settings, migrated_database) -> AsyncIterator[Database]:
    """A catalog of this module's own: its outbox and views hold only what these tests put there."""
    own = settings.model_copy(update={"database_url": await migrated_database()})
    async with Database(own) as database:
        yield database


@pytest.fixture
async def nats(settings) -> AsyncIterator[NatsConnection]:
    async with NatsConnection(settings.nats_url) as connection:
        yield connection


@pytest.fixture
def own(own_streams):
    return own_streams


@pytest.fixture
def queue(db, nats, own) -> JobQueue:
    return JobQueue(db, nats, jobs_stream(own))


def status_is(queue: JobQueue, job_id: uuid.UUID, status: str):
    async def check() -> bool:
        return (await queue.status(job_id)).status == status

    return check


def drained(queue: JobQueue, nats: NatsConnection):
    """No job id left on the stream (a work queue drops what was acked)."""

    async def check() -> bool:
        js = await nats.jetstream()
        return (await js.stream_info(queue.stream.name)).state.messages == 0

    return check


@contextlib.asynccontextmanager
async def running(queue: JobQueue, handlers: dict[str, Handler], **spec: Any) -> AsyncIterator[JobRunner]:
    """A runner with small timings until the block ends (then stopped, drained)."""
    options: dict[str, Any] = {"idle_wait_s": 0.02, "ack_wait_s": 5.0, "backoff_s": (0.01,)}
    runner = JobRunner(queue, handlers, RunnerSpec(f"r{uuid.uuid4().hex[:8]}", **(options | spec)))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Calls:
    """A handler that counts its calls per job; `fail` decides, per call, whether to raise instead."""

    def __init__(self, fail: Callable[[int], Exception | None] = lambda call: None) -> None:
        self.fail, self.calls = fail, Counter[uuid.UUID]()
        self.gate: asyncio.Event | None = None

    async def __call__(self, job: Job) -> dict[str, Any]:
        self.calls[job.id] += 1
        if self.gate is not None:
            await self.gate.wait()
        if error := self.fail(self.calls[job.id]):
            raise error
        return {"call": self.calls[job.id], "params": job.params}


async def insert_records(db: Database, source_system: str, kind: str, count: int) -> list[uuid.UUID]:
    async with db.connection() as connection:
        rows = await connection.fetch(
            """INSERT INTO sophia_core.unified_data_catalog (source_system, kind, external_id, data)
               SELECT $1, $2, 'e-' || n, jsonb_build_object('name', 'deal ' || n, 'stage', 'open')
               FROM generate_series(1, $3) AS n RETURNING id""",
            source_system,
            kind,
            count,
        )
    return [row["id"] for row in rows]


async def test_submitting_twice_with_one_idempotency_key_gives_one_job_that_runs_once(queue, nats):
    handler = Calls()
    first, created = await queue.submit("echo", {"n": 1}, idempotency_key="echo:1")
    again, created_again = await queue.submit("echo", {"n": 2}, idempotency_key="echo:1")
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert again.params == {"n": 1}
    async with running(queue, {"echo": handler}):
        await eventually(status_is(queue, first.id, "succeeded"))
        await eventually(drained(queue, nats))
        late, created_late = await queue.submit("echo", idempotency_key="echo:1")
    assert not created_late
    assert late.status == "succeeded"
    assert handler.calls == {first.id: 1}
    job = await queue.status(first.id)
    assert (job.attempts, job.result, job.error) == (1, {"call": 1, "params": {"n": 1}}, None)
    assert job.started_at is not None
    assert job.finished_at is not None


async def test_a_failing_handler_is_retried_then_ends_failed_with_its_error(queue):
    handler = Calls(lambda call: RuntimeError(f"boom {call}"))
    job, _ = await queue.submit("flaky")
    async with running(queue, {"flaky": handler}, max_attempts=3):
        await eventually(status_is(queue, job.id, "failed"))
    failed = await queue.status(job.id)
    assert (failed.attempts, failed.error) == (3, "RuntimeError: boom 3")
    assert handler.calls[job.id] == 3


async def test_a_handler_failing_once_succeeds_on_its_retry(queue):
    handler = Calls(lambda call: ConnectionResetError("lost it") if call == 1 else None)
    job, _ = await queue.submit("flaky")
    async with running(queue, {"flaky": handler}, max_attempts=3):
        await eventually(status_is(queue, job.id, "succeeded"))
    done = await queue.status(job.id)
    assert (done.attempts, done.error, done.result) == (2, None, {"call": 2, "params": {}})


async def test_invalid_input_or_an_unknown_kind_fails_at_once(queue):
    handler = Calls(lambda call: Invalid("no such thing"))
    bad, _ = await queue.submit("picky")
    unknown, _ = await queue.submit("nobody-runs-this")
    async with running(queue, {"picky": handler}, max_attempts=5):
        await eventually(status_is(queue, bad.id, "failed"))
        await eventually(status_is(queue, unknown.id, "failed"))
    assert (await queue.status(bad.id)).attempts == 1
    assert (await queue.status(unknown.id)).error == "Invalid: No handler for job kind 'nobody-runs-this'."


async def test_a_succeeded_job_delivered_again_is_acked_without_running(queue, nats):
    handler = Calls()
    job, _ = await queue.submit("echo")
    async with running(queue, {"echo": handler}):
        await eventually(status_is(queue, job.id, "succeeded"))
        js = await nats.jetstream()
        for copy in range(2):  # a redelivery after the duplicate window, twice
            headers = {"Nats-Msg-Id": f"again-{copy}:{job.id}"}
            await js.publish(f"{queue.stream.name}.echo", str(job.id).encode(), headers=headers)
        await eventually(drained(queue, nats))
    assert handler.calls == {job.id: 1}


async def test_the_status_query_follows_a_job_through_its_states(queue, db):
    handler = Calls()
    handler.gate = asyncio.Event()
    job, _ = await queue.submit("slow", {"size": 3})
    assert (await queue.status(job.id)).status == "queued"
    async with running(queue, {"slow": handler}):
        await eventually(status_is(queue, job.id, "running"))
        handler.gate.set()
        await eventually(status_is(queue, job.id, "succeeded"))
    with pytest.raises(NotFound, match="No job"):
        await queue.status(uuid.uuid4())
    async with db.connection() as connection:
        assert (await jobs.counts(connection, "slow"))["succeeded"] >= 1


async def test_a_job_whose_publish_was_lost_is_published_again_by_the_sweep(queue, db):
    async with db.connection() as connection:  # inserted, then the submitter died before publishing
        job, _ = await jobs.enqueue(connection, "echo", {"lost": True})
    handler = Calls()
    async with running(queue, {"echo": handler}, sweep_s=0.1, republish_after_s=0.0):
        await eventually(status_is(queue, job.id, "succeeded"))
    assert handler.calls == {job.id: 1}


async def test_the_sweep_deletes_jobs_finished_longer_ago_than_the_retention(queue, db):
    later = datetime.now(UTC) + timedelta(hours=1)
    async with running(queue, {"echo": Calls()}, sweep_s=0.05, retention_s=24 * 3600.0):
        old, _ = await queue.submit("echo", {"n": 1}, idempotency_key=f"old-{uuid.uuid4()}")
        recent, _ = await queue.submit("echo", {"n": 2})
        unfinished, _ = await queue.submit("echo", {"n": 3}, not_before=later)
        await eventually(status_is(queue, old.id, "succeeded"))
        await eventually(status_is(queue, recent.id, "succeeded"))
        async with db.connection() as connection:  # `old` ended two days ago
            await connection.execute(
                "UPDATE sophia_core.jobs SET finished_at = now() - interval '2 days' WHERE id = $1", old.id
            )
        await eventually(lambda: gone(queue, old.id))
    assert (await queue.status(recent.id)).status == "succeeded"
    assert (await queue.status(unfinished.id)).status == "queued"
    again, created = await queue.submit("echo", {"n": 1}, idempotency_key=old.idempotency_key)
    assert created  # its key is free again
    assert again.id != old.id


async def gone(queue: JobQueue, job_id: uuid.UUID) -> bool:
    try:
        await queue.status(job_id)
    except NotFound:
        return True
    return False


async def test_a_burst_of_deal_changes_gives_one_announcement_per_window_and_it_runs(queue, db, nats, own):
    source, started = f"burst{uuid.uuid4().hex[:6]}", datetime.now(UTC) - timedelta(seconds=1)
    deal_ids = await insert_records(db, source, "deal", 50)
    records = stream_specs(own)["records"]
    js = await nats.jetstream()
    await ensure_streams(js, [records])

    async def publish(number: int, kind: str = "deal") -> None:
        payload = {
            "id": str(uuid.uuid4()),
            "source_system": source,
            "kind": kind,
            "external_id": f"e-{number}",
        }
        event = Envelope.new("record.upserted", f"{source}/{kind}/e-{number}", payload, source="catalog")
        await js.publish(records.subject(event.key, event.type), encode(event), stream=records.name)

    debounce_s, now = 0.25, [time.time()]  # the announcement waits for its window's end
    window_end = datetime.fromtimestamp((now[0] // debounce_s + 1) * debounce_s, UTC)
    sink = announce_deal_changes(queue, debounce_s, clock=lambda: now[0])
    consumer = ConsumerSpec("deal-refresh", records.name, batch_size=7, batch_wait_s=0.01, idle_wait_s=0.05)
    processor = StreamProcessor(nats, consumer, sink, dead_letter_stream=dead_letter_spec(own))
    stop = asyncio.Event()
    processing = asyncio.create_task(processor.run(stop))
    try:
        async with running(queue, default_handlers(db, 60.0)):
            for number in range(50):
                await publish(number)
            await publish(0, kind="contact")
            await eventually(all_acked(nats, consumer, 51))
            # One job per window: 50 changes gave one (two if, on a slow machine, the announcement had
            # already started and the last changes fell to the next window), never one per change.
            assert await announcements_at_most(db, started, 2)()
            key = f"{ANNOUNCE_ACTIVE_DEALS}:{window_end.isoformat()}"
            async with db.connection() as connection:
                job = await jobs.find(connection, key)
            assert job is not None
            assert job.not_before == window_end
            await eventually(status_is(queue, job.id, "succeeded"))
            now[0] += debounce_s  # the next window: changes there get an announcement of their own
            await publish(99)
            await eventually(all_acked(nats, consumer, 52))
            next_key = f"{ANNOUNCE_ACTIVE_DEALS}:{(window_end + timedelta(seconds=debounce_s)).isoformat()}"
            async with db.connection() as connection:
                assert await jobs.find(connection, next_key) is not None
    finally:
        stop.set()
        await asyncio.wait_for(processing, 10)
    announced_job = await queue.status(job.id)
    assert announced_job.started_at is not None
    assert announced_job.started_at >= window_end
    async with db.connection() as connection:
        in_view = await connection.fetch(
            "SELECT id FROM sophia_core.active_deals_mv WHERE source_system = $1", source
        )
        announced = await connection.fetchval(
            "SELECT count(*) FROM sophia_core.outbox"
            " WHERE event_type = 'view.refreshed' AND created_at >= $1",
            started,
        )
    assert sorted(row["id"] for row in in_view) == sorted(deal_ids)  # kept by the catalog's writes
    assert announced >= 1


def all_acked(nats: NatsConnection, consumer: ConsumerSpec, sequence: int):
    """The consumer has acked the stream up to `sequence` and holds nothing unacked."""

    async def check() -> bool:
        js = await nats.jetstream()
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:  # not made yet
            return False
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == sequence

    return check


def announcements_at_most(db: Database, since: datetime, count: int):
    """Announcements made since `since` for windows ending after it: those of a test run just
    before this one on this module's database, for windows of long ago, are not counted."""

    async def check() -> bool:
        async with db.connection() as connection:
            found = await connection.fetchval(
                "SELECT count(*) FROM sophia_core.jobs"
                " WHERE kind = $1 AND created_at >= $2 AND (not_before >= $2 OR not_before IS NULL)",
                ANNOUNCE_ACTIVE_DEALS,
                since,
            )
        return bool(1 <= found <= count)

    return check


async def test_a_refresh_job_mends_the_view_and_says_how_many_rows(queue, db):
    source = f"mend{uuid.uuid4().hex[:6]}"
    [deal] = await insert_records(db, source, "deal", 1)
    async with db.connection() as connection:  # what a load around the trigger leaves
        await connection.execute("DELETE FROM sophia_core.active_deals_mv WHERE id = $1", deal)
    job, _ = await queue.submit(REFRESH_ACTIVE_DEALS)
    async with running(queue, default_handlers(db, 60.0)):
        await eventually(status_is(queue, job.id, "succeeded"))
    assert (await queue.status(job.id)).result == {"view": "active_deals_mv", "mended": 1}
    async with db.connection() as connection:
        back = await connection.fetchval(
            "SELECT count(*) FROM sophia_core.active_deals_mv WHERE id = $1", deal
        )
    assert back == 1


async def test_reprocess_records_reemits_exactly_the_matching_records_events(queue, db):
    source, other = f"re{uuid.uuid4().hex[:6]}", f"ro{uuid.uuid4().hex[:6]}"
    deals = await insert_records(db, source, "deal", 12)
    await insert_records(db, source, "contact", 3)
    await insert_records(db, other, "deal", 4)
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE sophia_core.unified_data_catalog SET deleted_at = now() WHERE id = $1", deals[0]
        )
    params = {"source_system": source, "kind": "deal", "batch_size": 5}
    job, _ = await queue.submit(REPROCESS_RECORDS, params)
    async with running(queue, default_handlers(db, 60.0)):
        await eventually(status_is(queue, job.id, "succeeded"))
    async with db.connection() as connection:
        events = await connection.fetch(
            "SELECT topic, event_type, key, payload FROM sophia_core.outbox WHERE key LIKE $1 OR key LIKE $2",
            f"{source}/%",
            f"{other}/%",
        )
    assert sorted(uuid.UUID(event["payload"]["id"]) for event in events) == sorted(deals[1:])
    assert {(event["topic"], event["event_type"]) for event in events} == {("records", "record.upserted")}
    assert {event["payload"]["version"] for event in events} == {1}
    done = await queue.status(job.id)
    assert done.result == {"emitted": 11, "after": str(max(deals[1:]))}


async def store_enrichment(
    db: Database, record_id: uuid.UUID, embedding_version: str, predictions: dict[str, str]
) -> None:
    """An embedding by `embedding_version` and a prediction per {task: model version}."""
    zeros = "[" + ",".join(["0"] * 384) + "]"
    async with db.connection() as connection:
        await connection.execute(
            "INSERT INTO sophia_core.record_embeddings "
            "(record_id, model_version, record_version, content, embedding) "
            "VALUES ($1, $2, 1, 'text', $3::text::vector)",
            record_id,
            embedding_version,
            zeros,
        )
        for task, version in predictions.items():
            await connection.execute(
                "INSERT INTO sophia_core.record_predictions "
                "(record_id, task, model_version, record_version, prediction) "
                "VALUES ($1, $2, $3, 1, '{}')",
                record_id,
                task,
                version,
            )


async def reenriched(db: Database, kind: str) -> list[uuid.UUID]:
    """The records of `kind` the job re-emitted, as `record.reenrich` events (no other type)."""
    async with db.connection() as connection:
        events = await connection.fetch(
            "SELECT event_type, payload FROM sophia_core.outbox WHERE payload ->> 'kind' = $1", kind
        )
    assert {event["event_type"] for event in events} <= {"record.reenrich"}
    return sorted(uuid.UUID(event["payload"]["id"]) for event in events)


async def run_reembed(queue: JobQueue, db: Database, kind: str, served: dict[str, str], **params: Any) -> Job:
    job, _ = await queue.submit(REEMBED_RECORDS, params, idempotency_key=f"reembed-{kind}")
    async with running(queue, {REEMBED_RECORDS: reembed_handler(db, [kind], "v2", served, batch=1)}):
        await eventually(lambda: queue_status_is_final(queue, job.id))
    return await queue.status(job.id)


async def queue_status_is_final(queue: JobQueue, job_id: uuid.UUID) -> bool:
    return (await queue.status(job_id)).status in ("succeeded", "failed")


async def test_reembed_records_reemits_the_records_not_enriched_by_the_models_now_served(queue, db):
    kind = f"k{uuid.uuid4().hex[:6]}"  # a kind of this test's own: no other record matches
    current, stale, never, old_labels, no_sentiment = await insert_records(db, "reembed", kind, 5)
    served = {"classification": "c2", "sentiment": "s2"}
    await store_enrichment(db, current, "v2", served)
    await store_enrichment(db, stale, "v1", served)
    await store_enrichment(db, old_labels, "v2", {"classification": "c1", "sentiment": "s2"})
    await store_enrichment(db, no_sentiment, "v2", {"classification": "c2"})
    done = await run_reembed(queue, db, kind, served)
    assert await reenriched(db, kind) == sorted([stale, never, old_labels, no_sentiment])
    assert (done.status, done.result) == (
        "succeeded",
        {"emitted": 4, "model_version": "v2", "task_versions": served},
    )


async def test_a_sentiment_no_head_serves_any_more_is_kept_not_redone(queue, db):
    kind = f"k{uuid.uuid4().hex[:6]}"
    [labeled] = await insert_records(db, "reembed", kind, 1)
    await store_enrichment(db, labeled, "v2", {"classification": "c2", "sentiment": "s1"})
    done = await run_reembed(queue, db, kind, {"classification": "c2"})  # no sentiment head (fp32)
    assert await reenriched(db, kind) == []
    assert (done.status, done.result["emitted"]) == ("succeeded", 0)


async def test_the_versions_a_reembed_job_names_count_not_the_runners_own(queue, db):
    """A worker of an older release taking the job in a rolling deploy looks for what the new
    models have not done, not for what its own have not."""
    kind = f"k{uuid.uuid4().hex[:6]}"
    [old] = await insert_records(db, "reembed", kind, 1)
    await store_enrichment(db, old, "v2", {"classification": "c2"})  # all done, by the runner's models
    newer = {"classification": "c3"}
    done = await run_reembed(
        queue, db, kind, {"classification": "c2"}, model_version="v2", task_versions=newer
    )
    assert await reenriched(db, kind) == [old]
    assert done.result == {"emitted": 1, "model_version": "v2", "task_versions": newer}


@pytest.mark.parametrize(
    "params", [{"model_version": 2}, {"task_versions": ["c2"]}, {"task_versions": {"a": 1}}]
)
async def test_a_reembed_job_naming_versions_wrongly_fails_at_once_saying_why(queue, db, params):
    done = await run_reembed(queue, db, f"k{uuid.uuid4().hex[:6]}", {"classification": "c2"}, **params)
    assert (done.status, done.attempts) == ("failed", 1)
    assert "task_versions an object of task -> version string" in str(done.error)


def test_each_combination_of_served_models_has_a_reembed_job_of_its_own():
    first = reembed_key("v2", {"sentiment": "s1", "classification": "c1"})
    assert first == "reembed_records:v2;classification=c1;sentiment=s1"
    assert first == reembed_key("v2", {"classification": "c1", "sentiment": "s1"})
    others = [reembed_key("v3", {"classification": "c1", "sentiment": "s1"})]
    others += [
        reembed_key("v2", {"classification": "c2", "sentiment": "s1"}),
        reembed_key("v2", {"classification": "c1"}),
    ]
    assert len({first, *others}) == 4


async def test_a_job_not_before_a_time_waits_for_it(queue):
    handler = Calls()
    not_before = datetime.now(UTC) + timedelta(seconds=0.3)
    job, _ = await queue.submit("later", not_before=not_before)
    async with running(queue, {"later": handler}):
        await eventually(status_is(queue, job.id, "succeeded"))
    started = (await queue.status(job.id)).started_at
    assert started is not None
    assert started >= not_before


async def test_a_deal_change_after_its_windows_announcement_went_is_left_to_the_next_window(queue, db):
    hour = 3600.0 * 300_000  # an hour's start, long ago: windows of this test's own
    sink = announce_deal_changes(queue, 3600.0, clock=lambda: hour + 1800)
    payload = {"id": str(uuid.uuid4()), "source_system": "late", "kind": "deal", "external_id": "1"}
    change = Envelope.new("record.deleted", "late/deal/1", payload, source="catalog")
    contact = Envelope.new(
        "record.upserted", "late/contact/1", payload | {"kind": "contact"}, source="catalog"
    )
    this_window, next_window = (datetime.fromtimestamp(hour + 3600 * n, UTC) for n in (1, 2))
    await sink([contact])  # no deal in it: nothing to announce
    async with db.connection() as connection:
        assert await jobs.find(connection, f"{ANNOUNCE_ACTIVE_DEALS}:{this_window.isoformat()}") is None
    await sink([contact, change])
    async with db.connection() as connection:
        first = await jobs.find(connection, f"{ANNOUNCE_ACTIVE_DEALS}:{this_window.isoformat()}")
        assert first is not None
        assert first.not_before == this_window
        await jobs.mark_running(connection, first.id)  # a runner whose clock is ahead took it early
    await sink([change])
    async with db.connection() as connection:
        later = await jobs.find(connection, f"{ANNOUNCE_ACTIVE_DEALS}:{next_window.isoformat()}")
    assert later is not None
    assert (later.status, later.not_before) == ("queued", next_window)


def tiny_queue(queue: JobQueue) -> JobQueue:
    """The queue on a jobs stream too small for any job id: every publish is refused."""
    spec = WorkQueueSpec(queue.stream.name, partitions=1, max_bytes=1)
    return JobQueue(queue.database, queue.nats, spec)


async def test_submitting_to_a_jobs_stream_that_refuses_it_is_unavailable_and_submitting_again_publishes(
    queue,
):
    key = f"refused-{uuid.uuid4()}"
    with pytest.raises(Unavailable, match="NATS failed"):
        await tiny_queue(queue).submit("echo", idempotency_key=key)
    async with queue.database.connection() as connection:
        unpublished = await jobs.find(connection, key)
    assert unpublished is not None
    assert (unpublished.status, unpublished.published_at) == ("queued", None)
    again, created = await queue.submit("echo", idempotency_key=key)  # the stream has room again
    assert (again.id, created) == (unpublished.id, False)
    assert (await queue.status(again.id)).published_at is not None


async def test_a_sweep_that_cannot_publish_tries_again_at_the_next_sweep(queue, db, logs_of):
    tiny = tiny_queue(queue)
    async with db.connection() as connection:
        job, _ = await jobs.enqueue(connection, "echo", {"swept": True})
    logs = logs_of(job_runner)
    async with running(tiny, {"echo": Calls()}, sweep_s=0.02, republish_after_s=0.0):
        await eventually(lambda: logs.count("job_sweep_failed") >= 2)
        assert (await queue.status(job.id)).published_at is None
        await ensure_streams(await queue.nats.jetstream(), [queue.stream])  # room again
        await eventually(status_is(queue, job.id, "succeeded"))
    assert str(logs.events("job_sweep_failed")[0]["error"]).startswith("NATS failed")


async def test_a_runner_refused_its_consumer_keeps_retrying_until_it_gets_one(queue, nats, logs_of):
    job, _ = await queue.submit("echo")
    js = await nats.jetstream()
    rival = ConsumerConfig(durable_name="rival", ack_policy=AckPolicy.EXPLICIT)
    await js.add_consumer(queue.stream.name, rival)  # a work queue takes one unfiltered consumer
    handler = Calls()
    runner = JobRunner(
        queue, {"echo": handler}, RunnerSpec("refused", idle_wait_s=0.05), reconnect_max_s=0.05
    )
    stop = asyncio.Event()
    logs = logs_of(consumer)
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(
            lambda: len([e for e in logs.events("consumer_failed") if e["consumer"] == "refused"]) >= 2
        )
        assert handler.calls == {}
        await js.delete_consumer(queue.stream.name, "rival")
        await eventually(status_is(queue, job.id, "succeeded"))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert handler.calls == {job.id: 1}


async def test_a_runner_at_its_concurrency_fetches_no_more_jobs_until_one_ends(queue, nats):
    handler = Calls()
    handler.gate = asyncio.Event()
    first, _ = await queue.submit("slow", {"n": 1})
    second, _ = await queue.submit("slow", {"n": 2})
    async with running(queue, {"slow": handler}, concurrency=1) as runner:
        await eventually(lambda: sum(handler.calls.values()) == 1)
        js = await nats.jetstream()
        assert (await js.consumer_info(queue.stream.name, runner.spec.name)).num_ack_pending == 1
        handler.gate.set()
        await eventually(status_is(queue, first.id, "succeeded"))
        await eventually(status_is(queue, second.id, "succeeded"))
    assert handler.calls == {first.id: 1, second.id: 1}


async def test_stopping_the_runner_by_cancelling_it_cancels_the_jobs_in_hand_without_a_verdict(queue, nats):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless(job: Job) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    job, _ = await queue.submit("endless")
    runner = JobRunner(queue, {"endless": endless}, RunnerSpec("cancelled", idle_wait_s=0.2))
    task = asyncio.create_task(runner.run(asyncio.Event()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    left = await queue.status(job.id)
    assert (left.status, left.attempts, left.error) == ("running", 1, None)  # its message comes back
    js = await nats.jetstream()
    assert (await js.stream_info(queue.stream.name)).state.messages == 1


async def test_a_result_that_cannot_be_stored_is_no_verdict_and_the_job_runs_again(queue):
    calls = Counter[uuid.UUID]()

    async def unstorable_once(job: Job) -> dict[str, Any]:
        calls[job.id] += 1
        return {"at": object()} if calls[job.id] == 1 else {"ok": True}  # JSON has no object()

    def verdicts_failed() -> float:
        return sample("sophia_jobs_verdict_failed_total", reason="TypeError")

    before = verdicts_failed()
    job, _ = await queue.submit("unstorable")
    async with running(queue, {"unstorable": unstorable_once}):
        await eventually(status_is(queue, job.id, "succeeded"))
    done = await queue.status(job.id)
    assert (done.attempts, done.result) == (2, {"ok": True})
    assert verdicts_failed() == before + 1


async def test_a_message_that_is_no_job_id_is_terminated_and_the_jobs_behind_it_run(queue, nats, logs_of):
    js = await nats.jetstream()
    await ensure_streams(js, [queue.stream])
    await js.publish(f"{queue.stream.name}.echo", b"not-a-job-id", stream=queue.stream.name)
    job, _ = await queue.submit("echo")
    logs = logs_of(job_runner)
    async with running(queue, {"echo": Calls()}):
        await eventually(status_is(queue, job.id, "succeeded"))
        await eventually(drained(queue, nats))
    assert logs.count("job_message_invalid") == 1


async def test_a_job_finished_elsewhere_while_this_runner_claims_it_is_acked_without_running(queue, db, nats):
    job, _ = await queue.submit("echo")
    handler = Calls()
    async with db.connection() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM sophia_core.jobs WHERE id = $1 FOR UPDATE", job.id)
        async with running(queue, {"echo": handler}):
            await eventually(lambda: claim_waiting_on_lock(db))  # read it queued; its claim now waits
            await holder.execute(
                """UPDATE sophia_core.jobs SET status = 'succeeded', attempts = 1, finished_at = now(),
                   result = '{"by": "another runner"}' WHERE id = $1""",
                job.id,
            )
            await holder.execute("COMMIT")
            await holder.execute("BEGIN")  # for the transaction block's own COMMIT
            await eventually(drained(queue, nats))
    assert handler.calls == {}
    done = await queue.status(job.id)
    assert (done.status, done.attempts, done.result) == ("succeeded", 1, {"by": "another runner"})


async def claim_waiting_on_lock(db: Database) -> bool:
    async with db.connection() as connection:
        return bool(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE sophia_core.jobs%'"
            )
        )


async def test_a_job_running_past_the_ack_wait_is_kept_and_not_handed_out_again(queue, nats):
    progress: list[bytes] = []
    calls = Counter[uuid.UUID]()

    async def long(job: Job) -> dict[str, Any]:
        calls[job.id] += 1
        await eventually(lambda: len(progress) >= 3)  # 1.5 ack waits: without them, redelivered
        return {}

    async def spy(message: Msg) -> None:
        progress.append(message.data)

    job, _ = await queue.submit("long")
    assert nats.client is not None
    acks = await nats.client.subscribe(f"$JS.ACK.{queue.stream.name}.>", cb=spy)  # what the runner says
    try:
        async with running(queue, {"long": long}, ack_wait_s=0.2):
            await eventually(status_is(queue, job.id, "succeeded"))
    finally:
        await acks.unsubscribe()
    assert calls == {job.id: 1}
    assert progress[:3] == [b"+WPI"] * 3


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"kind": 5}, "source_system and kind must be strings (or absent: any)."),
        ({"source_system": ["a"]}, "source_system and kind must be strings (or absent: any)."),
        ({"batch_size": 0}, "batch_size must be a positive integer."),
        ({"batch_size": "10"}, "batch_size must be a positive integer."),
    ],
)
async def test_reprocess_records_with_bad_params_fails_at_once_saying_why(queue, db, params, error):
    job, _ = await queue.submit(REPROCESS_RECORDS, params)
    async with running(queue, default_handlers(db, 60.0), max_attempts=5):
        await eventually(status_is(queue, job.id, "failed"))
    failed = await queue.status(job.id)
    assert (failed.attempts, failed.error) == (1, f"Invalid: {error}")


@pytest.mark.parametrize("window_s", [0.0, -1.0])
def test_a_debounce_window_must_be_positive(queue, window_s):
    with pytest.raises(ValueError, match="window_s must be > 0"):
        announce_deal_changes(queue, window_s)
