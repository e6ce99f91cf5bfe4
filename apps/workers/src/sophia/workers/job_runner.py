"""The job runner: a durable pull consumer on the jobs stream that runs each job's handler.

A runner claims a job in Postgres before its handler runs and acks the message only once the
outcome is written, so a crash means the job runs again: handlers must be idempotent. A job
already finished is acked without running (a redelivery or a duplicate); one whose `not_before`
is still ahead is NAKed with the delay left. A failed attempt goes back to queued and is NAKed
with backoff; after `max_attempts` (at once for `Invalid` input) the job is `failed` with its
error. Postgres or NATS failing around a job is not an attempt: its message is NAKed and comes
back. A sweep publishes again the jobs whose publish was never confirmed (a crash, NATS down).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prometheus_client import Counter

from sophia.core.errors import Invalid, Unavailable
from sophia.database import jobs
from sophia.database.jobs import Job
from sophia.events.connection import NATS_FAILURES
from sophia.events.consumer import (
    ConsumerLoop,
    Message,
    PullSubscription,
    explicit_ack_consumer,
)
from sophia.events.dead_letter import describe
from sophia.events.streams import ensure_streams
from sophia.shared.logging import get_logger
from sophia.shared.resilience import honour_cancellation
from sophia.workers.jobs import Handler, JobQueue

__all__ = ["JobRunner", "RunnerSpec"]

log = get_logger(__name__)

JOBS_FINISHED = Counter("sophia_jobs_finished_total", "Jobs that ended, by outcome", ["kind", "status"])
JOBS_RETRIED = Counter("sophia_jobs_retried_total", "Failed job attempts queued again", ["kind"])
JOBS_VERDICT_FAILED = Counter(
    "sophia_jobs_verdict_failed_total", "Job messages NAKed because Postgres or NATS failed", ["reason"]
)


@dataclass(frozen=True, slots=True)
class RunnerSpec:
    """The runner's durable consumer and how it bounds, retries and sweeps."""

    name: str = "jobs"
    concurrency: int = 4
    """Jobs running at once in this process."""
    max_attempts: int = 5
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)
    """Delays before another attempt, by attempts made (the last one repeats)."""
    ack_wait_s: float = 30.0
    """How long JetStream waits for a verdict; a running job renews it every half of it."""
    idle_wait_s: float = 1.0
    sweep_s: float = 30.0
    """How often to look for jobs whose publish was never confirmed..."""
    republish_after_s: float = 60.0
    """...and how old such a job must be (a submit may still be publishing it)."""
    retention_s: float = 7 * 24 * 3600.0
    """How long a finished job's row is kept (for `sophia jobs status`) before the sweep deletes it."""

    def backoff_after(self, attempts: int) -> float:
        return self.backoff_s[min(max(attempts, 1), len(self.backoff_s)) - 1]


class JobRunner:
    """`await JobRunner(queue, handlers, spec).run(stop)`: jobs until `stop`, then those in hand finish."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        spec: RunnerSpec | None = None,
        *,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.queue, self.handlers, self.spec = queue, dict(handlers), spec or RunnerSpec()
        self.reconnect_max_s = reconnect_max_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweep_due = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = ConsumerLoop(self.queue.nats, name=self.spec.name, reconnect_max_s=self.reconnect_max_s)
        try:
            await self._loop.run(
                self._subscribe, lambda subscription: self._consume(subscription, stop), stop
            )
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _subscribe(self) -> PullSubscription:
        js = await self.queue.nats.jetstream()
        await ensure_streams(js, [self.queue.stream])
        # The runner counts attempts in Postgres; NAKs for `not_before` are no attempt.
        config = explicit_ack_consumer(
            self.spec.name,
            ack_wait_s=self.spec.ack_wait_s,
            max_ack_pending=max(self.spec.concurrency * 10, 100),
        )
        await js.add_consumer(self.queue.stream.name, config)
        return await PullSubscription.bind(self.queue.nats, self.queue.stream.name, self.spec.name)

    async def _consume(self, subscription: PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            honour_cancellation()
            await self._sweep()
            room = self.spec.concurrency - len(self._tasks)
            if room <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            messages = await subscription.take(room, wait_s=self.spec.idle_wait_s)
            honour_cancellation()
            self._loop.progressed()
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        """Publish again the jobs whose first publish was never confirmed; forget old finished ones."""
        if time.monotonic() < self._sweep_due:
            return
        self._sweep_due = time.monotonic() + self.spec.sweep_s
        try:
            async with self.queue.database.connection() as connection:
                stale = await jobs.unpublished(connection, self.spec.republish_after_s)
                if purged := await jobs.purge_finished(connection, self.spec.retention_s):
                    log.info("jobs_purged", count=purged)
            for job in stale:
                await self.queue.publish(job)
                log.info("job_republished", job=str(job.id), kind=job.kind)
        except Unavailable as error:
            log.warning("job_sweep_failed", error=error.detail)

    async def _handle(self, message: Message) -> None:
        try:
            await self._run(message)
        except Exception as error:  # Postgres or NATS away (or a bug): no verdict; it comes back
            log.warning("job_verdict_failed", subject=message.subject, error=repr(error))
            JOBS_VERDICT_FAILED.labels(type(error).__name__).inc()
            with contextlib.suppress(*NATS_FAILURES):
                async with asyncio.timeout(self.queue.nats.timeout_s):
                    await message.nak(delay=self.spec.backoff_s[0])

    async def _run(self, message: Message) -> None:
        try:
            job_id = UUID(message.data.decode())
        except ValueError:
            log.warning("job_message_invalid", subject=message.subject)
            await message.term()
            return
        database = self.queue.database
        async with database.connection() as connection:
            job = await jobs.get(connection, job_id)
        if job is None or job.finished:  # deleted, or a redelivery of work done
            await message.ack()
            return
        if (
            job.not_before is not None
            and (wait_s := (job.not_before - datetime.now(UTC)).total_seconds()) > 0
        ):
            await message.nak(delay=wait_s)
            return
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self._finish(message, job, Invalid(f"No handler for job kind {job.kind!r}."))
            return
        async with database.connection() as connection:
            claimed = await jobs.mark_running(connection, job_id)
        if claimed is None:
            await message.ack()
            return
        try:
            result = await self._call(handler, claimed, message)
        except Exception as error:
            log.warning("job_attempt_failed", job=str(job_id), kind=job.kind, error=repr(error))
            await self._finish(message, claimed, error)
            return
        async with database.connection() as connection:
            await jobs.mark_succeeded(connection, job_id, result)
        await message.ack()
        JOBS_FINISHED.labels(job.kind, "succeeded").inc()

    async def _finish(self, message: Message, job: Job, error: Exception) -> None:
        """Record a failed attempt: queued again with backoff, or `failed` for good."""
        final = isinstance(error, Invalid) or job.attempts >= self.spec.max_attempts
        async with self.queue.database.connection() as connection:
            await jobs.mark_failed(
                connection, job.id, f"{type(error).__name__}: {describe(error)}", final=final
            )
        if final:
            await message.ack()
            JOBS_FINISHED.labels(job.kind, "failed").inc()
        else:
            await message.nak(delay=self.spec.backoff_after(job.attempts))
            JOBS_RETRIED.labels(job.kind).inc()

    async def _call(self, handler: Handler, job: Job, message: Message) -> Mapping[str, Any] | None:
        keep_alive = asyncio.create_task(self._keep_alive(message))
        try:
            return await handler(job)
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)

    async def _keep_alive(self, message: Message) -> None:
        """Tell JetStream a long job is still running, so it does not hand it to another runner."""
        while True:
            await asyncio.sleep(self.spec.ack_wait_s / 2)
            with contextlib.suppress(*NATS_FAILURES):
                await message.in_progress()
