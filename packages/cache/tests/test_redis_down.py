"""Redis is optional: with it down the cache serves from L1 and the loader, and picks L2 up again."""

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as redis

from sophia.cache import CacheConfig, TieredCache
from sophia.engines.process import free_port
from sophia.engines.valkey import EmbeddedValkey

from .conftest import CountingLoader


async def test_with_nothing_listening_on_the_port_the_cache_still_answers(config: CacheConfig) -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    loader = CountingLoader()
    async with TieredCache(client, config) as cache:
        assert not cache.listening
        for round_number in range(3):
            for key in ("a", "b", "c"):
                assert (await cache.get_or_load(key, loader)).value == b"value", round_number
        await cache.invalidate(keys=["a"], tags=["t"])
        assert (await cache.get_or_load("a", loader)).value == b"value"
    await client.aclose()
    assert loader.calls == 4


async def l2_holds(cache: TieredCache, client: redis.Redis, key: str) -> bool:
    try:
        return bool(await client.exists(cache.l2.value_key(key)))
    except (redis.RedisError, OSError):
        return False


@pytest.mark.chaos
async def test_redis_stopped_then_restarted_l1_serves_and_l2_returns_within_5_s(
    tmp_path: Path, config: CacheConfig
) -> None:
    valkey = EmbeddedValkey(tmp_path)
    await valkey.start()
    client = redis.Redis.from_url(valkey.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    checker = redis.Redis.from_url(valkey.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    loader = CountingLoader()
    try:
        async with TieredCache(client, config) as cache:
            await cache.get_or_load("before", loader)
            assert await l2_holds(cache, checker, "before")

            await valkey.stop()
            for index in range(20):
                assert (await cache.get_or_load("before", loader)).value == b"value"
                assert (await cache.get_or_load(f"during:{index}", loader)).value == b"value"
            assert loader.calls == 21

            await valkey.start()
            started = time.perf_counter()
            attempt = 0
            while not await l2_holds(cache, checker, f"after:{attempt}"):
                elapsed = time.perf_counter() - started
                assert elapsed < 5, "L2 not used again within 5 s of Redis returning"
                attempt += 1
                await cache.get_or_load(f"after:{attempt}", loader)
                await asyncio.sleep(0.05)
            print(f"L2 in use again {time.perf_counter() - started:.2f} s after Redis returned")
            while not cache.listening:
                assert time.perf_counter() - started < 5, "listener not resubscribed within 5 s"
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        await checker.aclose()
        await valkey.stop()
