"""GET /api/v1/admin/jobs/{id}: a job as it stands, for admin keys only; clear 4xx otherwise."""

from __future__ import annotations

import uuid

from problem_assertions import assert_problem

from sophia.database import jobs


async def test_an_admin_reads_a_job_as_it_stands(client, database):
    key = f"api-{uuid.uuid4()}"
    async with database.connection() as connection:
        job, _ = await jobs.enqueue(connection, "reprocess_records", {"kind": "deal"}, key)
        await jobs.mark_running(connection, job.id)
        await jobs.mark_failed(connection, job.id, "Postgres went away", final=True)
    response = await client.get(f"/api/v1/admin/jobs/{job.id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(job.id)
    assert body["kind"] == "reprocess_records"
    assert body["idempotency_key"] == key
    assert (body["status"], body["attempts"], body["error"]) == ("failed", 1, "Postgres went away")
    assert body["params"] == {"kind": "deal"}
    assert body["finished_at"] is not None


async def test_an_unknown_job_is_404_and_a_malformed_id_422(client):
    missing = uuid.uuid4()
    assert str(missing) in assert_problem(await client.get(f"/api/v1/admin/jobs/{missing}"), 404)["detail"]
    assert_problem(await client.get("/api/v1/admin/jobs/not-a-uuid"), 422)


async def test_a_write_key_may_not_read_jobs(client, api_keys):
    headers = {"Authorization": f"Bearer {api_keys['write']}"}
    assert_problem(await client.get(f"/api/v1/admin/jobs/{uuid.uuid4()}", headers=headers), 403)
