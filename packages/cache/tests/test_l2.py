"""The Redis tier answers a failed call as "nothing there", counted, and keeps healthy connections."""

import asyncio
from dataclasses import replace

import redis.asyncio as redis
from prometheus_client import REGISTRY

from sophia.cache import CacheConfig, RedisConnection
from sophia.cache.l2 import RedisTier
from sophia.cache.ttl import REDIS_CONNECTIONS_KEPT
from sophia.shared.resilience import BreakerState


def failures(operation: str) -> float:
    return REGISTRY.get_sample_value("sophia_cache_redis_failures_total", {"operation": operation}) or 0.0


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
