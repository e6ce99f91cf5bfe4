"""The running stack's caches, as a command that changes the catalog needs them: to say what changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sophia.cache import CacheConfig, RedisConnection, TieredCache
from sophia.shared.settings import Settings


@asynccontextmanager
async def running_caches(settings: Settings) -> AsyncIterator[TieredCache | None]:
    """A cache on the stack's Redis whose invalidations reach every API process; None without Redis
    (nothing is running, so nothing is cached)."""
    if not settings.redis_url:
        yield None
        return
    config = CacheConfig.from_settings(settings)
    async with (
        RedisConnection.from_settings(settings) as redis,
        TieredCache(redis.client, config, name="cli") as cache,
    ):
        yield cache
