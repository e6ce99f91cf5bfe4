"""Engines are started, restarted when they die, and stopped with nothing left behind."""

import asyncio
import os

import asyncpg
import pytest

from sophia.engines import Engines
from sophia.engines.nats import EmbeddedNats
from sophia.engines.postgres import EmbeddedPostgres
from sophia.engines.process import tcp_answers
from sophia.engines.valkey import EmbeddedValkey
from sophia.shared.settings import Settings


async def wait_for(condition, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_configured_urls_start_nothing(tmp_path):
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://x/y", redis_url="redis://x", nats_url="nats://x"
    )
    async with Engines(settings) as urls:
        assert urls.database_url == "postgresql://x/y"
        assert urls.nats_url == "nats://x"
    assert not (tmp_path / "postgres").exists()


@pytest.mark.chaos
async def test_a_killed_valkey_is_restarted_on_the_same_port(tmp_path):
    valkey = EmbeddedValkey(tmp_path)
    await valkey.start()
    try:
        first_pid = valkey.process.pid
        valkey.process.kill()
        await wait_for(lambda: _restarted(valkey.process, first_pid))
        assert await valkey._ready()  # answers AUTH with its password on the same port
        assert valkey.process.restarts == 1
    finally:
        await valkey.stop()
    assert not alive(valkey.process.pid)


@pytest.mark.chaos
async def test_a_killed_postgres_comes_back_with_its_data(tmp_path):
    postgres = EmbeddedPostgres(tmp_path, durable=True)
    url = await postgres.start()
    try:
        connection = await asyncpg.connect(url)
        await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        await connection.close()
        first_pid = postgres.process.pid
        postgres.process.kill()
        await wait_for(lambda: _restarted(postgres.process, first_pid), timeout_s=60)
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT n FROM kept") == 42
        await connection.close()
    finally:
        await postgres.stop()
    assert not alive(postgres.process.pid)


@pytest.mark.chaos
async def test_nats_starts_with_jetstream_and_stops(tmp_path):
    nats = EmbeddedNats(tmp_path)
    await nats.start()
    pid = nats.process.pid
    try:
        assert await tcp_answers("127.0.0.1", nats.port, b"", b"INFO ")
    finally:
        await nats.stop()
    assert not alive(pid)


async def _restarted(process, first_pid: int) -> bool:
    return process.pid != first_pid and process.restarts >= 1 and await process.ready()
