"""HTTP for background jobs: where one stands (`sophia jobs status` over HTTP). Jobs are submitted
by the workers (the debounced view refresh) or `sophia jobs submit`; finished ones are kept for
`SOPHIA_JOBS_RETENTION_S`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, Field

from sophia.api.dependencies import Admin
from sophia.core.errors import NotFound
from sophia.database import jobs

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobOut(BaseModel):
    """A background job as it stands. `result` holds its progress while it runs."""

    id: UUID
    kind: str = Field(examples=["refresh_active_deals"])
    idempotency_key: str | None = None
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    params: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    not_before: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


@router.get(
    "/admin/jobs/{job_id}",
    response_model=JobOut,
    responses={404: {"description": "No such job (or it finished longer ago than the retention)"}},
    summary="A background job's status, attempts, result or error",
)
async def job_status(job_id: UUID, caller: Admin) -> dict[str, Any]:
    async with caller.state.database.connection() as connection:
        job = await jobs.get(connection, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return {name: getattr(job, name) for name in JobOut.model_fields}
