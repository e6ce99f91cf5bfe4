"""The running stack's caches, as a command that changes the catalog needs them: to say what changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sophia.cache import CacheConfig, RedisConnection, TieredCache
from sophia.cli.failures import say
from sophia.shared.settings import Settings
from sophia.shared.urls import without_password


@asynccontextmanager
async def running_caches(settings: Settings) -> AsyncIterator[TieredCache | None]:
    """A cache on the stack's Redis whose invalidations reach every API process; None without Redis
    (nothing is running, so nothing is cached). An invalidation that could not reach Redis is tried
    once more as a clear at the end; if that fails too the command says so (on stderr: what it
    changed is done, but running processes may serve the old answers until they expire)."""
    if not settings.redis_url:
        yield None
        return
    config = CacheConfig.from_settings(settings)
    async with (
        RedisConnection.from_settings(settings) as redis,
        TieredCache(redis.client, config, name="cli") as cache,
    ):
        yield cache
        if cache.owes_clear:
            await cache.clear()
        if cache.owes_clear:
            longest = max(ttl.fresh_s + ttl.stale_while_revalidate_s for ttl in config.ttl_classes.values())
            say(
                f"Warning: Redis ({without_password(settings.redis_url)}) did not take the cache "
                "invalidation: running API processes may serve the old answers until their cached "
                f"entries expire (up to {longest:g} s)."
            )
