"""A stream limit JetStream cannot hold is a clear error at start (workers, `sophia up`, the events
API), never a silent 503 on every publish; NATS merely being away does not stop the workers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from nats.js.errors import NotFoundError

from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamStorageRefused
from sophia.workers import streams as streams_module
from sophia.workers.streams import all_streams, check_streams

TOO_BIG = 10**15  # a petabyte per stream: no test machine's JetStream can reserve it


@pytest.fixture
def huge(settings):
    return settings.model_copy(
        update={"events_stream_prefix": f"t{uuid.uuid4().hex[:10]}-", "events_max_bytes": TOO_BIG}
    )


async def test_a_limit_jetstream_cannot_reserve_names_the_setting_and_creates_nothing(huge):
    async with NatsConnection(huge.nats_url) as nats:
        with pytest.raises(StreamStorageRefused) as refused:
            await check_streams(huge, nats)
        assert "SOPHIA_EVENTS_MAX_BYTES" in refused.value.detail
        assert f"{TOO_BIG:,} bytes" in refused.value.detail
        js = await nats.jetstream()
        with pytest.raises(NotFoundError):
            await js.stream_info(all_streams(huge)[0].name)


async def test_nats_away_at_start_is_not_fatal(huge, logs_of):
    logs = logs_of(streams_module)
    # Nothing listens there: whatever the timeout, NATS never answers, so a short one proves as much.
    async with NatsConnection("nats://127.0.0.1:1", timeout_s=0.05) as nats:
        await check_streams(huge, nats)  # returns: each worker waits for NATS on its own
    assert logs.events("streams_not_checked") == [
        {"event": "streams_not_checked", "error": "Unavailable", "log_level": "warning"}
    ]


async def test_the_events_api_answers_503_naming_the_setting(huge, api_keys):
    from app_clients import app_client
    from problem_assertions import assert_problem

    event = {"type": "user.event", "key": "k", "payload": {"name": "n"}}
    async with app_client(huge, api_keys["write"]) as client:
        problem = assert_problem(await client.post("/api/v1/events", json=[event]), 503)
    assert "SOPHIA_EVENTS_MAX_BYTES" in problem["detail"]


def run(argv: list[str], huge, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SOPHIA_")}
    env |= {
        "SOPHIA_DATABASE_URL": huge.database_url,
        "SOPHIA_REDIS_URL": huge.redis_url,
        "SOPHIA_NATS_URL": huge.nats_url,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_EVENTS_STREAM_PREFIX": huge.events_stream_prefix,
        "SOPHIA_EVENTS_MAX_BYTES": str(TOO_BIG),
    }
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.e2e  # a process of its own, 0.5 s and more
def test_the_workers_process_exits_naming_the_setting(huge, tmp_path):
    done = run([sys.executable, "-m", "sophia.workers"], huge, tmp_path)
    assert done.returncode == 1
    assert "sophia workers cannot start" in done.stderr
    assert "SOPHIA_EVENTS_MAX_BYTES" in done.stderr


@pytest.mark.e2e  # a process of its own, 0.5 s and more
def test_sophia_up_stops_before_serving_and_names_the_setting(huge, tmp_path):
    done = run([sys.executable, "-m", "sophia.cli.main", "up", "--seed-records", "0"], huge, tmp_path)
    assert done.returncode == 1
    assert "sophia up cannot start" in done.stderr
    assert "SOPHIA_EVENTS_MAX_BYTES" in done.stderr
    assert not (tmp_path / "endpoints.json").exists()
