"""The Redis tier answers a failed call as "nothing there", counted, and keeps healthy connections."""

import asyncio
from dataclasses import replace

import pytest
import redis.asyncio as redis
from metrics import sample
from redis.exceptions import MaxConnectionsError

from sophia.cache import CacheConfig, RedisConnection
from sophia.cache.l2 import RedisTier
from sophia.cache.ttl import REDIS_CONNECTIONS_KEPT
from sophia.shared.resilience import BreakerState


def failures(operation: str) -> float:
    return sample("sophia_cache_redis_failures_total", operation=operation)


async def test_a_command_redis_refuses_is_answered_as_nothing_and_keeps_the_pooled_connections(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    tier = RedisTier(redis_client, config)
    assert await tier.call("warm-up", lambda client: client.ping()) is True
    pooled = redis_client.connection_pool._available_connections  # type: ignore[attr-defined]
    idle_before = list(pooled)
    before = failures("bad-script")

    answer = await tier.call("bad-script", lambda client: client.eval("this is not lua", 0))

    assert answer is None
    assert failures("bad-script") - before == 1
    assert idle_before
    assert all(connection.is_connected for connection in idle_before)
    assert await tier.call("after", lambda client: client.ping()) is True


async def test_a_burst_past_the_pools_size_waits_its_turn_and_never_opens_the_breaker(settings, config):
    """256 lookups at once (one embed request of 256 inputs) on a pool of 8: redis-py's own pool
    raised MaxConnectionsError past its size, which read as Redis being down."""
    small = settings.model_copy(update={"redis_max_connections": 8})
    async with RedisConnection.from_settings(small) as connection:
        tier = RedisTier(connection.client, replace(config, redis_in_flight=8 - REDIS_CONNECTIONS_KEPT))
        before = failures("burst")

        async def lookup(number: int) -> bytes | None:
            return await tier.call("burst", lambda client: client.get(f"{config.key_prefix}burst:{number}"))

        answers = await asyncio.gather(*(lookup(number) for number in range(256)))
        assert answers == [None] * 256  # nothing stored under these keys: every call answered
        assert failures("burst") == before
        assert tier.breaker.state is BreakerState.CLOSED
        assert len(connection.client.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]


def busy(operation: str) -> float:
    return sample("sophia_cache_redis_busy_total", operation=operation)


async def test_a_wait_for_the_pool_that_runs_out_says_max_connections_not_redis_down(settings, config):
    """redis-py's waiting pool says `ConnectionError("No connection available.")`: ours says what
    it is, so the breaker and the cache do not take this process's own limit for an outage."""
    url = settings.redis_url or ""
    async with RedisConnection(url, timeout_s=2, max_connections=1, pool_wait_s=0.02) as connection:
        pool = connection.client.connection_pool
        taken = await pool.get_connection()  # the only connection
        try:
            tier = RedisTier(connection.client, config)
            before = failures("starved")
            for _ in range(5):  # past the breaker's minimum of calls: all failures, were they counted
                answer = await tier.call("starved", lambda client: client.get(f"{config.key_prefix}x"))
                assert answer is None
            assert failures("starved") - before == 5
            assert tier.breaker.state is BreakerState.CLOSED
            with pytest.raises(MaxConnectionsError, match="connections of this process were busy"):
                await connection.client.get(f"{config.key_prefix}x")
        finally:
            await pool.release(taken)
        assert await tier.call("fed", lambda client: client.ping()) is True


async def test_reads_queued_past_the_timeout_are_skipped_and_invalidations_wait_their_turn(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    # The second read must get its place (at 0.09 s) within the timeout (0.16 s): that margin
    # is what a busy event loop may lag by. The last two reads' timeouts (0.16 s) fall before the
    # second read ends (0.18 s) whatever the loop's lag: due timers fire in order.
    tier = RedisTier(redis_client, replace(config, redis_in_flight=1, redis_timeout_s=0.16))

    async def slow(client: redis.Redis) -> str:
        await asyncio.sleep(0.09)
        return "done"

    before = busy("queued")
    answers = await asyncio.gather(
        *(tier.call("queued", slow) for _ in range(4)),
        tier.call("queued-invalidation", slow, invalidates=True),
    )
    # one place, 0.09 s a call, 0.16 s of patience: the first two reads run, the last two are
    # skipped as busy; the invalidation behind them waits and runs
    assert answers == ["done", "done", None, None, "done"]
    assert busy("queued") - before == 2
    assert tier.breaker.state is BreakerState.CLOSED


async def test_invalidating_a_tag_costs_one_counter_however_many_entries_carry_it(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    """Random list filters once grew tag sets into the millions, and a write had to read them."""
    tier = RedisTier(redis_client, replace(config, key_prefix=f"{config.key_prefix}many:"))
    tags = ("lists", "list:a:*")
    for number in range(300):
        lookup = await tier.get_or_claim(f"page:{number}", "", 0, tags)
        assert await tier.set(f"page:{number}", b"page", 60, tags, stamp=lookup.stamp or "") is True
    namespace = tier.value_key("")[: -len("value:")]
    others = [key async for key in redis_client.scan_iter(f"{namespace}*") if b":value:" not in key]
    assert sorted(others) == sorted(tier.generation_key(tag).encode() for tag in tags)
    assert await tier.delete([], ["list:a:*"]) is True
    assert [(await tier.get_or_claim(f"page:{n}", "", 0, tags)).value for n in (0, 150, 299)] == [None] * 3


async def test_a_generation_lost_to_eviction_never_brings_an_old_value_back(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    tier = RedisTier(redis_client, config)
    tags = ("evicted-tag",)
    first = await tier.get_or_claim("evictable", "", 0, tags)
    assert await tier.set("evictable", b"old", 60, tags, stamp=first.stamp or "") is True
    await tier.delete([], tags)  # a write: the generation moves on
    second = await tier.get_or_claim("evictable", "", 0, tags)
    assert second.value is None
    assert await tier.set("evictable", b"newer", 60, tags, stamp=second.stamp or "") is True
    await redis_client.delete(tier.generation_key("evicted-tag"))  # what maxmemory's LRU may do
    third = await tier.get_or_claim("evictable", "", 0, tags)
    assert third.value is None  # neither value comes back: the generation restarts past both
    assert int(third.stamp or 0) > int(second.stamp or 0) > int(first.stamp or 0)


async def test_a_new_connection_names_the_client_without_reading_package_metadata(settings, monkeypatch):
    """Left to redis-py, every new connection looked its own version up in the installed packages'
    metadata (directory scans, milliseconds on the event loop while a busy process grows its pool).
    The version is known once, and the server is still told it."""
    import redis as redis_package
    import redis.utils

    def no_lookup() -> str:
        raise AssertionError("a connection looked the package metadata up")

    monkeypatch.setattr(redis.utils, "get_lib_version", no_lookup)
    async with RedisConnection(settings.redis_url or "", timeout_s=2, max_connections=4) as connection:
        client = connection.client
        held = [await client.connection_pool.get_connection() for _ in range(3)]  # three new connections
        for one in held:
            await client.connection_pool.release(one)
        described = await client.client_info()
        assert described["lib-name"] == "redis-py"
        assert described["lib-ver"] == redis_package.__version__
