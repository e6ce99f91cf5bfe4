"""Background jobs' rows: enqueued once per idempotency key, claimed, finished, looked up.

A job moves queued -> running -> succeeded | failed; a failed attempt with attempts left goes
back to queued. `result` holds what the job returned, and meanwhile any progress it saved, so a
retried job can resume where the last attempt stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from sophia.database.pool import Connection

STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")
ERROR_MAX_CHARS = 4000
IDEMPOTENCY_KEY_MAX_CHARS = 512
"""An idempotency key's length: PostgreSQL indexes it (an index row holds at most 8,191 bytes)."""

_COLUMNS = (
    "id, kind, idempotency_key, status, attempts, params::text AS params, result::text AS result, "
    "error, not_before, created_at, published_at, started_at, finished_at"
)


@dataclass(frozen=True, slots=True)
class Job:
    """One job's row."""

    id: UUID
    kind: str
    idempotency_key: str | None
    status: str
    attempts: int
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    not_before: datetime | None
    created_at: datetime
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def _job(row: asyncpg.Record) -> Job:
    # jsonb travels as text: callers on bare asyncpg connections have no jsonb codec.
    values = dict(row)
    values["params"] = orjson.loads(values["params"])
    values["result"] = None if values["result"] is None else orjson.loads(values["result"])
    return Job(**values)


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def enqueue(
    connection: Connection,
    kind: str,
    params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    not_before: datetime | None = None,
) -> tuple[Job, bool]:
    """A new queued job and True; or, if `idempotency_key` names one already, that job and False."""
    row = await connection.fetchrow(
        f"""INSERT INTO sophia_core.jobs (kind, params, idempotency_key, not_before)
            VALUES ($1, $2::text::jsonb, $3, $4)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}""",
        kind,
        _json(params or {}),
        idempotency_key,
        not_before,
    )
    if row is not None:
        return _job(row), True
    existing = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM sophia_core.jobs WHERE idempotency_key = $1", idempotency_key
    )
    if existing is None:  # deleted since the INSERT saw it (the retention sweep): insert anew
        return await enqueue(connection, kind, params, idempotency_key, not_before)
    return _job(existing), False


async def get(connection: Connection, job_id: UUID) -> Job | None:
    row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM sophia_core.jobs WHERE id = $1", job_id)
    return None if row is None else _job(row)


async def find(connection: Connection, idempotency_key: str) -> Job | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM sophia_core.jobs WHERE idempotency_key = $1", idempotency_key
    )
    return None if row is None else _job(row)


async def mark_published(connection: Connection, job_id: UUID) -> None:
    """JetStream has the job's id: the sweep leaves it alone."""
    await connection.execute(
        "UPDATE sophia_core.jobs SET published_at = now() WHERE id = $1 AND published_at IS NULL", job_id
    )


async def unpublished(connection: Connection, older_than_s: float, limit: int = 100) -> list[Job]:
    """Queued jobs whose id may never have reached JetStream (inserted over `older_than_s` ago)."""
    rows = await connection.fetch(
        f"""SELECT {_COLUMNS} FROM sophia_core.jobs
            WHERE published_at IS NULL AND status = 'queued'
              AND created_at < now() - make_interval(secs => $1)
            ORDER BY created_at LIMIT $2""",
        older_than_s,
        limit,
    )
    return [_job(row) for row in rows]


async def mark_running(connection: Connection, job_id: UUID) -> Job | None:
    """Claim the job for one more attempt; None if it is finished (nothing to run).

    A job found `running` is claimed too: its message came back, so the runner that had it died."""
    row = await connection.fetchrow(
        f"""UPDATE sophia_core.jobs
            SET status = 'running', attempts = attempts + 1, started_at = now(), finished_at = NULL
            WHERE id = $1 AND status IN ('queued', 'running') RETURNING {_COLUMNS}""",
        job_id,
    )
    return None if row is None else _job(row)


async def save_progress(connection: Connection, job_id: UUID, progress: Mapping[str, Any]) -> None:
    """Keep where a running job got to (in `result`), for an attempt after a failure to resume."""
    await connection.execute(
        "UPDATE sophia_core.jobs SET result = $2::text::jsonb WHERE id = $1", job_id, _json(progress)
    )


async def mark_succeeded(connection: Connection, job_id: UUID, result: Mapping[str, Any] | None) -> None:
    await connection.execute(
        """UPDATE sophia_core.jobs
           SET status = 'succeeded', result = coalesce($2::text::jsonb, result), error = NULL,
               finished_at = now()
           WHERE id = $1""",
        job_id,
        _json(result),
    )


async def mark_failed(connection: Connection, job_id: UUID, error: str, *, final: bool) -> None:
    """Record an attempt's error: the job is `failed` if `final`, else queued for another attempt."""
    await connection.execute(
        """UPDATE sophia_core.jobs
           SET status = CASE WHEN $3 THEN 'failed' ELSE 'queued' END, error = $2,
               finished_at = CASE WHEN $3 THEN now() END
           WHERE id = $1""",
        job_id,
        error[:ERROR_MAX_CHARS],
        final,
    )


async def purge_finished(connection: Connection, older_than_s: float, limit: int = 1000) -> int:
    """Delete up to `limit` jobs that finished over `older_than_s` ago; how many went. Their
    idempotency keys are free again: a job submitted with one of them now is a new job."""
    status = await connection.execute(
        """DELETE FROM sophia_core.jobs WHERE id IN (
               SELECT id FROM sophia_core.jobs
               WHERE status IN ('succeeded', 'failed') AND finished_at < now() - make_interval(secs => $1)
               ORDER BY finished_at LIMIT $2)""",
        older_than_s,
        limit,
    )
    return int(status.rsplit(" ", 1)[1])


async def counts(connection: Connection, kind: str | None = None) -> dict[str, int]:
    """Jobs by status (every status present, zero included), of one kind or all."""
    rows = await connection.fetch(
        "SELECT status, count(*) FROM sophia_core.jobs WHERE $1::text IS NULL OR kind = $1 GROUP BY status",
        kind,
    )
    return {status: 0 for status in STATUSES} | {row[0]: int(row[1]) for row in rows}
