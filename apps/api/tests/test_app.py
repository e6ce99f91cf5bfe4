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
