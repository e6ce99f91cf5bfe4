"""`sophia jobs submit|status` against the test session's PostgreSQL and JetStream (in-process)."""

import asyncio
import re
import uuid

import asyncpg
import pytest
from typer.testing import CliRunner

from sophia.cli import jobs as jobs_cli
from sophia.database import jobs
from sophia.events.connection import NatsConnection
from sophia.workers.jobs import jobs_stream

runner = CliRunner()


@pytest.fixture
def own(own_streams, monkeypatch):
    """A jobs stream of this test's own, and a console wide enough for whole ids."""
    monkeypatch.setattr(jobs_cli.console, "width", 200)
    return own_streams


def invoke(env, *args):
    return runner.invoke(jobs_cli.app, list(args), env=env)


def stream_messages(settings) -> int:
    async def count() -> int:
        async with NatsConnection(settings.nats_url) as nats:
            js = await nats.jetstream()
            return (await js.stream_info(jobs_stream(settings).name)).state.messages

    return asyncio.run(count())


def finished_job(settings) -> uuid.UUID:
    """A job that ran and succeeded, written straight into its table."""

    async def make() -> uuid.UUID:
        connection = await asyncpg.connect(settings.database_url)
        try:
            job, _ = await jobs.enqueue(connection, "reprocess_records", {"kind": "deal"})
            await jobs.mark_running(connection, job.id)
            await jobs.mark_succeeded(connection, job.id, {"emitted": 42})
            return job.id
        finally:
            await connection.close()

    return asyncio.run(make())


def test_jobs_submit_queues_a_job_once_per_key_and_status_shows_it(own, env):
    key = f"cli-{uuid.uuid4().hex[:8]}"
    args = ("submit", "reprocess_records", "--param", "kind=deal", "--param", "batch_size=50", "--key", key)
    submitted = invoke(env, *args)
    assert submitted.exit_code == 0, submitted.output
    match = re.search(r"Submitted job ([0-9a-f-]{36}) \(reprocess_records\)", submitted.output)
    assert match, submitted.output
    again = invoke(env, *args)
    assert again.exit_code == 0, again.output
    assert f"Job {match[1]} already has key '{key}': queued." in again.output
    assert stream_messages(own) == 1  # one job, one message for a runner
    shown = invoke(env, "status", match[1])
    assert shown.exit_code == 0, shown.output
    assert "status:     queued" in shown.output
    assert f"key:        {key}" in shown.output
    assert 'params:     {"kind":"deal","batch_size":50}' in shown.output


def test_jobs_status_shows_the_result_of_a_finished_job(own, env):
    job_id = finished_job(own)
    shown = invoke(env, "status", str(job_id))
    assert shown.exit_code == 0, shown.output
    assert "status:     succeeded" in shown.output
    assert "attempts:   1" in shown.output
    assert 'result:     {"emitted":42}' in shown.output


def test_jobs_status_of_an_unknown_or_malformed_id_exits_1(env):
    unknown = uuid.uuid4()
    result = invoke(env, "status", str(unknown))
    assert result.exit_code == 1
    assert f"No job {unknown} (database " in result.output  # which database it looked in
    malformed = invoke(env, "status", "not-an-id")
    assert malformed.exit_code == 1
    assert "Not a job id: 'not-an-id'." in malformed.output


def test_jobs_submit_with_a_malformed_param_is_a_usage_error(env):
    result = invoke(env, "submit", "reprocess_records", "--param", "no-equals-sign")
    assert result.exit_code == 2
    assert "is not NAME=VALUE" in result.output


def test_jobs_submit_with_nats_unreachable_exits_1_with_a_line_not_a_traceback(env):
    unreachable = env | {"SOPHIA_NATS_URL": "nats://127.0.0.1:1", "SOPHIA_ENGINE_TIMEOUT_S": "0.1"}
    result = invoke(unreachable, "submit", "refresh_active_deals")
    assert result.exit_code == 1
    assert "NATS is unreachable" in result.output
    assert ", NATS nats://127.0.0.1:1)." in result.output  # which NATS
    assert "Traceback" not in result.output


def test_jobs_submit_without_nats_configured_says_how_to_get_one_and_queues_nothing(own, env):
    result = invoke(env | {"SOPHIA_NATS_URL": ""}, "submit", "refresh_active_deals", "--key", "never-queued")
    assert result.exit_code == 1
    assert "No NATS: set SOPHIA_NATS_URL" in result.output

    async def queued() -> int:
        connection = await asyncpg.connect(own.database_url)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM sophia_core.jobs WHERE idempotency_key = $1", "never-queued"
            )
        finally:
            await connection.close()

    assert asyncio.run(queued()) == 0
