"""Background jobs: heavy work (view refreshes, bulk re-processing) submitted once, run at least once.

A job is a row in `sophia_core.jobs` (its status, attempts, result) and its id on the JetStream
work-queue stream `<prefix>jobs`, subject `<prefix>jobs.<kind>`, published with `Nats-Msg-Id` =
the job id. Submitting with an idempotency key already used finds that job instead of adding one.
`sophia.workers.job_runner` runs them; this module submits them, answers for their status and
holds Sophia's job kinds and the debounced announcement of deal changes to `active_deals_mv`'s
caches and live subscribers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sophia.core.errors import Invalid, NotFound, Unavailable
from sophia.core.events import Envelope
from sophia.database import Database, jobs, outbox, reprocess, views
from sophia.database.jobs import Job
from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.events.streams import StreamSpec, WorkQueueSpec, ensure_streams
from sophia.shared.logging import get_logger
from sophia.shared.settings import Settings
from sophia.workers.sinks import Sink

__all__ = [
    "ANNOUNCE_ACTIVE_DEALS",
    "REEMBED_RECORDS",
    "REFRESH_ACTIVE_DEALS",
    "REPROCESS_RECORDS",
    "Handler",
    "Job",
    "JobQueue",
    "WorkQueueSpec",
    "announce_deal_changes",
    "default_handlers",
    "jobs_stream",
    "reembed_handler",
    "reembed_key",
]

log = get_logger(__name__)

REFRESH_ACTIVE_DEALS = "refresh_active_deals"
ANNOUNCE_ACTIVE_DEALS = "announce_active_deals"
REPROCESS_RECORDS = "reprocess_records"
REEMBED_RECORDS = "reembed_records"
DEAL_EVENTS = frozenset({"record.upserted", "record.deleted"})

Handler = Callable[[Job], Awaitable[Mapping[str, Any] | None]]
"""Runs one attempt of a job; what it returns becomes the job's `result`."""


def jobs_stream(settings: Settings) -> WorkQueueSpec:
    """`<prefix>jobs`: one subject per job kind, kept until a runner acks (or 7 days)."""
    return WorkQueueSpec(
        settings.events_stream_prefix + "jobs",
        partitions=1,
        max_bytes=settings.events_max_bytes,
        replicas=settings.events_replicas,
    )


class JobQueue:
    """Submits jobs and answers for their status (`JobQueue(database, nats, jobs_stream(settings))`)."""

    def __init__(self, database: Database, nats: NatsConnection, stream: StreamSpec) -> None:
        self.database, self.nats, self.stream = database, nats, stream
        self._stream_ready = False

    async def submit(
        self,
        kind: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        not_before: datetime | None = None,
    ) -> tuple[Job, bool]:
        """The job (and True if new): the row first, then its id on the stream. Submitting again
        after a failure (NATS down: `Unavailable`) is safe and publishes what was not."""
        async with self.database.connection() as connection:
            job, created = await jobs.enqueue(connection, kind, params, idempotency_key, not_before)
        if job.published_at is None and not job.finished:
            await self.publish(job)
        return job, created

    async def publish(self, job: Job) -> None:
        """Put the job's id on the stream (once: its id is the `Nats-Msg-Id`), then say so."""
        js = await self.nats.jetstream()
        try:
            if not self._stream_ready:
                await ensure_streams(js, [self.stream])
                self._stream_ready = True
            headers = {"Nats-Msg-Id": str(job.id)}
            subject = f"{self.stream.name}.{job.kind}"
            await js.publish(subject, str(job.id).encode(), stream=self.stream.name, headers=headers)
        except NATS_FAILURES as error:
            raise Unavailable(f"NATS failed: {type(error).__name__}", retry_after_s=2) from error
        async with self.database.connection() as connection:
            await jobs.mark_published(connection, job.id)

    async def status(self, job_id: UUID) -> Job:
        """The job as it stands; `NotFound` if there is none."""
        async with self.database.connection() as connection:
            job = await jobs.get(connection, job_id)
        if job is None:
            raise NotFound(f"No job {job_id}.")
        return job


def params_problem(kind: str, params: Mapping[str, Any]) -> str | None:
    """What the job `kind` refuses in `params`, or None: the one rule the handler applies and
    `sophia jobs submit` checks before queueing (a job sure to fail is not queued)."""
    if kind == REPROCESS_RECORDS:
        if not all(
            params.get(name) is None or isinstance(params[name], str) for name in ("source_system", "kind")
        ):
            return "source_system and kind must be strings (or absent: any)."
        batch = params.get("batch_size")
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            return "batch_size must be a positive integer."
    return None


def default_handlers(database: Database, timeout_s: float, reprocess_batch: int = 1000) -> dict[str, Handler]:
    """Sophia's job kinds: `refresh_active_deals` (check the view against the catalog and mend it),
    `announce_active_deals` (a `view.refreshed` after deal changes) and `reprocess_records`."""

    async def refresh_active_deals(job: Job) -> dict[str, Any]:
        async with database.connection() as connection:
            mended = await views.refresh_active_deals(connection, timeout_s, actor="jobs")
        return {"view": "active_deals_mv", "mended": mended}

    async def announce_active_deals(job: Job) -> dict[str, Any]:
        async with database.connection() as connection:
            await outbox.view_refreshed(connection, "active_deals_mv")
        return {"view": "active_deals_mv"}

    async def reprocess_records(job: Job) -> dict[str, Any]:
        """`record.upserted` again for the live records matching {source_system, kind}, in batches;
        progress is saved with each batch, so a retry resumes after the last one."""
        if (problem := params_problem(REPROCESS_RECORDS, job.params)) is not None:
            raise Invalid(problem)
        source_system, kind = job.params.get("source_system"), job.params.get("kind")
        batch = job.params.get("batch_size", reprocess_batch)
        progress = job.result or {}
        after = UUID(progress["after"]) if progress.get("after") else None
        emitted = int(progress.get("emitted", 0))
        while True:
            async with database.connection() as connection, connection.transaction():
                count, last_id = await reprocess.reemit_batch(connection, source_system, kind, after, batch)
                if count == 0:
                    return {"emitted": emitted, "after": str(after) if after else None}
                emitted, after = emitted + count, last_id
                await jobs.save_progress(connection, job.id, {"emitted": emitted, "after": str(after)})

    return {
        REFRESH_ACTIVE_DEALS: refresh_active_deals,
        ANNOUNCE_ACTIVE_DEALS: announce_active_deals,
        REPROCESS_RECORDS: reprocess_records,
    }


def reembed_handler(
    database: Database, kinds: list[str], model_version: str, task_versions: dict[str, str], batch: int = 1000
) -> Handler:
    """`reembed_records`: a `record.reenrich` event for every live record of `kinds` not yet
    embedded by `model_version`, or whose prediction of a task in `task_versions` is missing or by
    another version (a new classifier head, say), so the enrichment does it anew; progress is
    saved per batch (`{"emitted": n, "after": last id}`) and a retry resumes after it.

    The job's params may name the versions (`{"model_version", "task_versions"}`, as the workers
    submit it): those count, not this process's, so a worker of an older release that takes the
    job during a rolling deploy still finds the records the new models have not done."""

    async def reembed_records(job: Job) -> dict[str, Any]:
        served_model, served_tasks = _served_versions(job, model_version, task_versions)
        progress = job.result or {}
        after = UUID(progress["after"]) if progress.get("after") else None
        emitted = int(progress.get("emitted", 0))
        while True:
            async with database.connection() as connection, connection.transaction():
                count, last_id = await reprocess.reemit_unenriched_batch(
                    connection, kinds, served_model, served_tasks, after, batch
                )
                if count == 0:
                    return {"emitted": emitted, "model_version": served_model, "task_versions": served_tasks}
                emitted, after = emitted + count, last_id
                await jobs.save_progress(connection, job.id, {"emitted": emitted, "after": str(after)})
            log.info("reembed_progress", job=str(job.id), emitted=emitted)

    return reembed_records


def _served_versions(
    job: Job, model_version: str, task_versions: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The versions a `reembed_records` job names, else the given ones; a clear `Invalid` if bad."""
    named_model = job.params.get("model_version", model_version)
    named_tasks = job.params.get("task_versions", task_versions)
    if not isinstance(named_model, str) or not (
        isinstance(named_tasks, dict) and all(isinstance(v, str) for v in named_tasks.values())
    ):
        raise Invalid("model_version must be a string and task_versions an object of task -> version string.")
    return named_model, named_tasks


def reembed_key(model_version: str, task_versions: dict[str, str]) -> str:
    """The idempotency key of the `reembed_records` job for the models now served: one job per
    combination, so a new embedding model, classifier head or sentiment head each get theirs."""
    tasks = "".join(f";{task}={version}" for task, version in sorted(task_versions.items()))
    return f"{REEMBED_RECORDS}:{model_version}{tasks}"


def announce_deal_changes(queue: JobQueue, window_s: float, clock: Callable[[], float] = time.time) -> Sink:
    """A `records` sink: deal changes enqueue one `announce_active_deals` per window of `window_s`,
    run once the window ends (so it covers every change of the window): `active_deals_mv` itself
    is kept by the catalog's writes, its caches and live subscribers are told once a window."""
    if window_s <= 0:
        raise ValueError("window_s must be > 0")

    async def submit(window: int) -> Job:
        window_end = datetime.fromtimestamp((window + 1) * window_s, UTC)
        key = f"{ANNOUNCE_ACTIVE_DEALS}:{window_end.isoformat()}"
        job, _ = await queue.submit(ANNOUNCE_ACTIVE_DEALS, idempotency_key=key, not_before=window_end)
        return job

    async def sink(batch: list[Envelope]) -> None:
        if not any(e.type in DEAL_EVENTS and e.payload.get("kind") == "deal" for e in batch):
            return
        window = math.floor(clock() / window_s)
        if (await submit(window)).status != "queued":
            # That window's announcement already went (a runner's clock ahead of ours, or a slow
            # batch): it may have gone before this change, so the next window's must say it.
            await submit(window + 1)

    return sink
