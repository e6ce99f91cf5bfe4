"""`python -m sophia.workers`: the outbox relay, stream processors and job runner, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from dataclasses import replace

import uvloop
from prometheus_client import start_http_server

from sophia.cache import CacheConfig, RedisConnection, TieredCache
from sophia.core.errors import Unavailable
from sophia.database import Database
from sophia.events.connection import NatsConnection
from sophia.events.dead_letter import dead_letter_spec
from sophia.events.streams import StreamStorageRefused, stream_specs
from sophia.ml.enrichment import DEFAULT_TEXT_FIELDS, Enricher, read_text_fields
from sophia.ml.models import Models
from sophia.shared.logging import configure_logging, get_logger
from sophia.shared.process import settle_heap
from sophia.shared.settings import Settings
from sophia.workers.job_runner import JobRunner, RunnerSpec
from sophia.workers.jobs import (
    REEMBED_RECORDS,
    JobQueue,
    announce_deal_changes,
    default_handlers,
    jobs_stream,
    reembed_handler,
    reembed_key,
)
from sophia.workers.processor import ConsumerSpec, StreamProcessor
from sophia.workers.relay import OutboxRelay
from sophia.workers.sinks import (
    RawSink,
    Sink,
    append_audit,
    enrich_records,
    fan_out,
    invalidate_caches,
    store_events,
    update_analytics,
)
from sophia.workers.streams import check_streams

log = get_logger("sophia.workers")

CATALOG_FOLLOWERS = "catalog-followers"
"""The consumer of `records` whose sinks follow every catalog change: caches, audit, analytics, and
the active deals' announcements."""
RETIRED_RECORDS_CONSUMERS = ("cache-invalidation", "audit-records", "analytics", "deal-refresh-debounce")
"""What `CATALOG_FOLLOWERS` took over from: one consumer each before."""

STORE_PULL_BYTES = 4 * 1024 * 1024
"""The most bytes one pull of an event-storing consumer brings (about 13,000 events of 300 bytes)."""


def processors(
    settings: Settings,
    database: Database,
    nats: NatsConnection,
    cache: TieredCache,
    enrichment: Sink | None = None,
) -> list[StreamProcessor]:
    """The stream processors, each a durable consumer with its idempotent sink;
    `enrichment` (with `SOPHIA_ML_ENABLED`) the ML enrichment's sink."""
    streams = stream_specs(settings)
    dead_letter = dead_letter_spec(settings)

    # Storing pays per batch (a transaction, a COPY): big batches, one fetched while one stores,
    # each at most STORE_PULL_BYTES (a message carries up to 256 events).
    def storing(name: str, stream: str) -> ConsumerSpec:
        return ConsumerSpec(
            name,
            streams[stream].name,
            batch_size=settings.events_sink_batch,
            concurrency=settings.events_sink_in_flight,
            max_bytes=STORE_PULL_BYTES,
            raw=True,
        )

    def analyzing(name: str, stream: str) -> ConsumerSpec:
        return ConsumerSpec(name, streams[stream].name, batch_size=1000, concurrency=2000)

    consumers: list[tuple[ConsumerSpec, Sink | RawSink]] = [
        (storing("events-to-postgres", "user-events"), store_events(database)),
        (storing("system-events-to-postgres", "system-events"), store_events(database)),
        # Everything that follows catalog changes but the models, in one delivery: fetched,
        # decoded and acked once, not once a sink (each was a consumer of its own until
        # 2026-12-06: docs/streams.md). A batch pays a few statements whatever its size: 100 deals
        # a batch apply 2,500 changes a second, 1,000 a batch 12,700 (docs/analytics.md).
        (
            ConsumerSpec(
                CATALOG_FOLLOWERS,
                streams["records"].name,
                batch_size=1000,
                concurrency=2000,
                replaces=RETIRED_RECORDS_CONSUMERS,
            ),
            fan_out(
                {
                    "cache-invalidation": invalidate_caches(cache, settings.cache_invalidate_max_keys),
                    "audit": append_audit(database),
                    "analytics": update_analytics(database, cache),
                    "deal-announcements": announce_deal_changes(
                        JobQueue(database, nats, jobs_stream(settings)), settings.jobs_debounce_s
                    ),
                }
            ),
        ),
        (analyzing("analytics-ml", "ml-predictions"), update_analytics(database, cache)),
        (ConsumerSpec("audit-admin", streams["audit-logs"].name), append_audit(database)),
    ]
    if enrichment is not None:  # calls, messages and deals get embeddings, labels and sentiment
        enriching = ConsumerSpec("ml-enrichment", streams["records"].name, batch_size=64, concurrency=64)
        consumers.append((enriching, enrichment))
    return [
        StreamProcessor(
            nats, replace(spec, ack_wait_s=settings.events_ack_wait_s), sink, dead_letter_stream=dead_letter
        )
        for spec, sink in consumers
    ]


async def run_workers(settings: Settings, stop: asyncio.Event) -> None:
    """Run every worker until `stop` is set; each finishes what it holds first."""
    if not (settings.database_url and settings.nats_url and settings.redis_url):
        raise RuntimeError(
            "SOPHIA_DATABASE_URL, _REDIS_URL and _NATS_URL must be set (`sophia up` sets them)"
        )
    async with NatsConnection(settings.nats_url, settings.engine_timeout_s) as nats:
        await check_streams(settings, nats)
        await _run(settings, nats, settings.redis_url, stop)
    log.info("workers_stopped")


async def _run(settings: Settings, nats: NatsConnection, redis_url: str, stop: asyncio.Event) -> None:
    async with (
        Database(settings) as database,
        RedisConnection.from_settings(settings, redis_url) as redis,
        # its L1 holds the models' predictions alone: it tells others of writes, hears only clears
        TieredCache(
            redis.client, CacheConfig.from_settings(settings), name="workers", hears_writes=False
        ) as cache,
        OutboxRelay(
            database,
            nats,
            stream_specs(settings),
            batch=settings.outbox_batch,
            poll_s=settings.outbox_poll_s,
            gather_s=settings.outbox_gather_s,
        ) as relay,
        AsyncExitStack() as stack,
    ):
        settle_heap()
        log.info("workers_started")
        queue = JobQueue(database, nats, jobs_stream(settings))
        handlers = default_handlers(database, settings.db_maintenance_timeout_s)
        enrichment = None
        if settings.ml_enabled:  # enrichment: the models load in this process too
            models = await stack.enter_async_context(Models.load(settings, cache))
            fields = read_text_fields(settings.ml_text_fields_file or DEFAULT_TEXT_FIELDS)
            enricher = Enricher(models.embeddings.encoder, models.labels, fields, models.sentiment_head)
            version, kinds = models.embeddings.version, sorted(fields)
            enrichment = enrich_records(database, enricher, version)
            handlers[REEMBED_RECORDS] = reembed_handler(database, kinds, version, enricher.versions)
            await _reenrich_once_per_models_served(queue, version, enricher.versions)
        runner = JobRunner(
            queue,
            handlers,
            RunnerSpec(
                concurrency=settings.jobs_concurrency,
                max_attempts=settings.jobs_max_attempts,
                retention_s=settings.jobs_retention_s,
            ),
        )
        await asyncio.gather(
            relay.run(stop),
            runner.run(stop),
            *(processor.run(stop) for processor in processors(settings, database, nats, cache, enrichment)),
        )


async def _reenrich_once_per_models_served(
    queue: JobQueue, version: str, task_versions: dict[str, str]
) -> None:
    """Records embedded or labeled by other models (or never) are enriched again, once per
    combination of the models served: the job's idempotency key names their versions."""
    key = reembed_key(version, task_versions)
    try:
        served = {"model_version": version, "task_versions": task_versions}
        job, created = await queue.submit(REEMBED_RECORDS, served, idempotency_key=key)
    except Unavailable as error:  # the row is in; the runner's sweep publishes it when NATS is back
        log.warning("reembed_not_submitted", error=error.detail)
        return
    if created:
        log.info("reembed_submitted", job=str(job.id), model_version=version, task_versions=task_versions)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if settings.workers_metrics_port:
        start_http_server(settings.workers_metrics_port, addr=settings.workers_metrics_host)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, stop.set)
        await run_workers(settings, stop)

    try:
        uvloop.run(serve())
    except StreamStorageRefused as error:
        raise SystemExit(f"sophia workers cannot start: {error.detail}") from None


if __name__ == "__main__":
    main()
