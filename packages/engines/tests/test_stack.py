"""The engines together: one that fails to start stops the others; the thread runs coroutines."""

import os

import pytest

from sophia.engines import Engines, EnginesThread
from sophia.shared.settings import Settings


async def test_an_engine_that_fails_to_start_stops_the_ones_that_did(tmp_path):
    (tmp_path / "nats").write_text("a file where the NATS store should go")
    settings = Settings(  # Valkey and NATS embedded, PostgreSQL configured (not started here)
        data_dir=tmp_path, database_url="postgresql://configured/elsewhere", redis_url=None, nats_url=None
    )
    engines = Engines(settings, durable=False)
    with pytest.raises(FileExistsError):
        await engines.__aenter__()
    assert engines.valkey is not None
    assert engines.valkey.process is not None
    assert engines.valkey.process.pid is not None
    assert engines.started == []
    with pytest.raises(ProcessLookupError):
        os.kill(engines.valkey.process.pid, 0)


def test_the_engines_thread_runs_coroutines_on_its_loop(tmp_path):
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://x/y", redis_url="redis://x", nats_url="nats://x"
    )
    thread = EnginesThread(settings)
    urls = thread.start()
    try:
        assert urls.as_env()["SOPHIA_REDIS_URL"] == "redis://x"

        async def where() -> object:
            import asyncio

            return asyncio.get_running_loop()

        assert thread.run(where()) is thread.loop
    finally:
        thread.stop()
    assert not thread._thread.is_alive()
