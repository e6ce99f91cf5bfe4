"""The application factory: what an app needs to start, and how a server's worker starts one."""

from __future__ import annotations

import os
import signal

import pytest

from sophia.api import app as application


class WorkerExited(Exception):
    """Raised in place of `os._exit`, which would end the test run."""


def test_an_app_without_its_engines_urls_is_refused_naming_the_variables(settings):
    with pytest.raises(RuntimeError, match="SOPHIA_DATABASE_URL, SOPHIA_REDIS_URL and SOPHIA_NATS_URL"):
        application.create_app(settings.model_copy(update={"nats_url": None}))


def test_a_worker_whose_server_died_while_it_started_exits_without_building_an_app(monkeypatch):
    asked: list[signal.Signals] = []
    monkeypatch.setattr(application, "die_with_parent", asked.append)  # not on the test process itself

    def exit_now(status: int) -> None:
        raise WorkerExited(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    # A server pid that is neither this process (a one-process server) nor its parent (a live server).
    monkeypatch.setenv(application.SERVER_PID_VARIABLE, str(os.getpid() + os.getppid()))
    with pytest.raises(WorkerExited) as exited:
        application.factory()
    assert exited.value.args == (0,)
    assert asked == [signal.SIGKILL]  # asked first, so a server dying a moment later still takes it along


async def test_a_flood_of_slow_or_failed_requests_leaves_a_sample_in_the_log_unless_every_request_is_logged(
    settings,
):
    """A client can make requests fail or take long at will; their access lines are at most
    `SOPHIA_LOG_CLIENT_LINES_PER_S` a second of each kind and status (a burst of twice that). With
    the access log on, every request is written. (What is written is read through the throttle:
    a logger keeps the level and format it was first used with, whatever a test configures.)"""
    from app_clients import app_client

    from sophia.shared.logging import CLIENT_LINES, configure_logging

    every_request_slow = settings.model_copy(update={"slow_request_s": 1e-9, "log_client_lines_per_s": 1.0})
    try:
        async with app_client(every_request_slow) as client:
            for _ in range(6):
                assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/api/v2/nothing")).status_code == 404  # a kind of its own
            sampled = CLIENT_LINES.left_out()
        async with app_client(every_request_slow.model_copy(update={"access_log": True})) as client:
            for _ in range(6):
                assert (await client.get("/healthz")).status_code == 200
            logged = CLIENT_LINES.left_out()
    finally:
        configure_logging(settings.log_level, settings.log_json, settings.log_client_lines_per_s)
    assert sampled == 4  # of six /healthz lines, the burst of two written; the 404's written
    assert logged == 0
