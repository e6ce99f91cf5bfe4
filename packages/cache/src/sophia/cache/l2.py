"""L2: entries in Redis, tags as Redis sets, every call behind a breaker and a timeout.

Nothing here raises a Redis error: a failed or skipped call is counted, logged and answered as
"nothing there", so callers go on with L1 and the loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import ConnectionError, RedisError

from sophia.cache.metrics import CACHE_REDIS_FAILURES
from sophia.cache.ttl import CacheConfig
from sophia.shared.logging import get_logger
from sophia.shared.resilience import BreakerOpen, CircuitBreaker

T = TypeVar("T")

REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

log = get_logger(__name__)

# Store a value unless it was invalidated after its load began: another process's invalidation may
# land between this process reading the database and writing Redis, and the old value must not
# outlive it. Tombstones (set by `delete`) hold the invalidation's time for `tombstone_s`.
# KEYS: the value key, then tombstones (the value's and each tag's); ARGV: blob, px, load start
# (epoch ms), then the tag set keys. One Valkey node: the tag keys are not declared as KEYS.
_GUARDED_SET = """
for i = 2, #KEYS do
  local dropped = redis.call('GET', KEYS[i])
  if dropped and tonumber(dropped) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 4, #ARGV do
  redis.call('SADD', ARGV[i], KEYS[1])
  redis.call('PEXPIRE', ARGV[i], ARGV[2], 'NX')
  redis.call('PEXPIRE', ARGV[i], ARGV[2], 'GT')
end
return 1
"""


class RedisTier:
    """Values under `{prefix}value:{key}`, tag sets under `{prefix}tag:{tag}`."""

    def __init__(self, client: redis.Redis | None, config: CacheConfig) -> None:
        self.client = client
        self.config = config
        self.breaker = CircuitBreaker(
            "redis-cache",
            failure_rate=0.5,
            window=10,
            min_calls=3,
            open_s=config.breaker_open_s,
            failure_types=REDIS_FAILURES,
        )

    def value_key(self, key: str) -> str:
        return f"{self.config.key_prefix}value:{key}"

    def tag_key(self, tag: str) -> str:
        return f"{self.config.key_prefix}tag:{tag}"

    def tombstone_key(self, kind: str, name: str) -> str:
        return f"{self.config.key_prefix}dropped:{kind}:{name}"

    async def call(self, operation: str, call: Callable[[redis.Redis], Awaitable[T]]) -> T | None:
        """Run `call` on the client through the breaker with a timeout; None if it could not."""
        if self.client is None:
            return None
        client = self.client
        try:
            async with self.breaker:
                return await asyncio.wait_for(call(client), self.config.redis_timeout_s)
        except BreakerOpen:
            CACHE_REDIS_FAILURES.labels(operation).inc()
            return None
        except REDIS_FAILURES as error:
            CACHE_REDIS_FAILURES.labels(operation).inc()
            log.warning("cache_redis_failed", operation=operation, error=type(error).__name__)
            if isinstance(error, (ConnectionError, OSError)):
                await self._drop_idle_connections()
            return None

    async def _drop_idle_connections(self) -> None:
        """After a connection failure the pooled ones are likely dead too: the next call dials afresh."""
        if self.client is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.connection_pool.disconnect(inuse_connections=False)

    async def get(self, key: str) -> bytes | None:
        async def get(client: redis.Redis) -> bytes | None:
            value = await client.get(self.value_key(key))
            return value if isinstance(value, bytes) else None

        return await self.call("get", get)

    async def set(
        self, key: str, blob: bytes, lifetime_s: float, tags: Iterable[str], loaded_since: float = 0.0
    ) -> bool | None:
        """Store `blob` for `lifetime_s` and add `key` to each tag's set (which lives at least as long),
        unless the key or a tag was invalidated after `loaded_since` (epoch seconds).

        True: stored; False: refused (invalidated meanwhile); None: Redis could not be asked."""
        tags = tuple(tags)
        milliseconds = max(1, int(lifetime_s * 1000))
        keys = [
            self.value_key(key),
            self.tombstone_key("value", key),
            *(self.tombstone_key("tag", tag) for tag in tags),
        ]
        arguments = [blob, milliseconds, int(loaded_since * 1000), *(self.tag_key(tag) for tag in tags)]

        async def store(client: redis.Redis) -> bool:
            return bool(await client.eval(_GUARDED_SET, len(keys), *keys, *arguments))  # type: ignore[arg-type]

        return await self.call("set", store)

    async def delete(self, keys: Iterable[str], tags: Iterable[str]) -> None:
        """Delete `keys`, every key in the sets of `tags`, and those sets; leave tombstones behind."""
        keys, tags = tuple(keys), tuple(tags)
        value_keys = [self.value_key(key) for key in keys]
        tag_keys = [self.tag_key(tag) for tag in tags]

        tombstones = [
            *(self.tombstone_key("value", key) for key in keys),
            *(self.tombstone_key("tag", tag) for tag in tags),
        ]

        async def delete(client: redis.Redis) -> None:
            now_ms = int(time.time() * 1000)
            async with client.pipeline(transaction=False) as pipe:
                for tombstone in tombstones:  # first, so a load racing this delete cannot store after it
                    pipe.set(tombstone, now_ms, px=int(self.config.tombstone_s * 1000))
                await pipe.execute()
            members: list[bytes | str] = []
            for tag_key in tag_keys:
                members += await client.smembers(tag_key)
            doomed = [*value_keys, *members, *tag_keys]
            if doomed:
                await client.delete(*doomed)

        await self.call("delete", delete)

    async def publish(self, message: bytes) -> None:
        async def publish(client: redis.Redis) -> None:
            await client.publish(self.config.channel, message)

        await self.call("publish", publish)
