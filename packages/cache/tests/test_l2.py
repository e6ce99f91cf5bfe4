"""The Redis tier answers a failed call as "nothing there", counted, and keeps healthy connections."""

import redis.asyncio as redis
from prometheus_client import REGISTRY

from sophia.cache import CacheConfig
from sophia.cache.l2 import RedisTier


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
