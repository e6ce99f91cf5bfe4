"""L2: entries in Redis, tags as Redis sets, every call behind a breaker and a timeout.

Nothing here raises a Redis error: a failed or skipped call is counted, logged and answered as
"nothing there", so callers go on with L1 and the loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import ConnectionError, MaxConnectionsError, RedisError

from sophia.cache.metrics import CACHE_REDIS_BUSY, CACHE_REDIS_FAILURES
from sophia.cache.ttl import CacheConfig
from sophia.shared.logging import get_logger
from sophia.shared.resilience import BreakerOpen, CircuitBreaker

T = TypeVar("T")

REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
REDIS_SATURATION: tuple[type[BaseException], ...] = (MaxConnectionsError,)
"""Our own pool's limit: never a sign that Redis is down (the bulkhead keeps calls under it)."""

log = get_logger(__name__)

# Store a value unless it was invalidated after its load began: another process's invalidation may
# land between this process reading the database and writing Redis, and the old value must not
# outlive it. Tombstones (set by `delete`) hold the invalidation's time for `tombstone_s`.
# KEYS: the value key, then tombstones (the value's and each tag's); ARGV: blob, px, load start
# (epoch ms), the loading lock's key and our token ('' if we hold none), then the tag set keys.
# One Valkey node: the lock and tag keys are not declared as KEYS. The lock goes either way.
_GUARDED_SET = """
if ARGV[5] ~= '' and redis.call('GET', ARGV[4]) == ARGV[5] then redis.call('DEL', ARGV[4]) end
for i = 2, #KEYS do
  local dropped = redis.call('GET', KEYS[i])
  if dropped and tonumber(dropped) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 6, #ARGV do
  redis.call('SADD', ARGV[i], KEYS[1])
  redis.call('PEXPIRE', ARGV[i], ARGV[2], 'NX')
  redis.call('PEXPIRE', ARGV[i], ARGV[2], 'GT')
end
return 1
"""


# KEYS: the epoch counter; ARGV: this process's epoch. Never moves the counter backwards.
_SYNC_EPOCH = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(ARGV[1])
if mine > held then redis.call('SET', KEYS[1], mine) return mine end
return held
"""
_BUMP_EPOCH = """
local next = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])) + 1
redis.call('SET', KEYS[1], next)
return next
"""
# The value, and a claim to load it unless it is fresh: one round trip on a miss. KEYS: value,
# loading lock; ARGV: token, lock px (0: no lock), now (epoch s). Reply: {value or '', state},
# state 0 no claim made, 1 claimed, 2 another holds it. A value's fresh-until is the big-endian
# double after its version and flags bytes (entry.py's header).
_GET_OR_CLAIM = """
local value = redis.call('GET', KEYS[1])
local px = tonumber(ARGV[2])
if value and (px == 0 or (#value >= 26 and struct.unpack('>d', value, 3) > tonumber(ARGV[3]))) then
  return {value, 0}
end
if px == 0 then return {value or '', 0} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', px) then return {value or '', 1} end
return {value or '', 2}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claim(enum.IntEnum):
    """What `get_or_claim` got: no claim made (fresh value, or locking off), the claim, or the
    news that another process is loading the key."""

    NONE = 0
    CLAIMED = 1
    HELD = 2


async def _drop_idle_connections(client: redis.Redis) -> None:
    """After a connection failure the pooled ones are likely dead too: the next call dials afresh."""
    with contextlib.suppress(*REDIS_FAILURES):
        await client.connection_pool.disconnect(inuse_connections=False)


class RedisTier:
    """Values under `{prefix}{epoch}:value:{key}`, tag sets under `{prefix}{epoch}:tag:{tag}`.

    The epoch (a counter in Redis) clears everything at once: bumping it leaves every old entry
    unreachable, to expire by its TTL, where deleting them could mean millions of keys."""

    def __init__(self, client: redis.Redis | None, config: CacheConfig) -> None:
        self.client = client
        self.config = config
        self.epoch = 0
        self.breaker = CircuitBreaker(
            "redis-cache",
            failure_rate=0.5,
            window=10,
            min_calls=3,
            open_s=config.breaker_open_s,
            failure_types=REDIS_FAILURES,
            saturation_types=REDIS_SATURATION,
        )
        # A bulkhead: at most `redis_in_flight` calls hold a connection; the rest wait their turn
        # (each holder is done within `redis_timeout_s`), so a burst never meets the pool's limit.
        self._in_flight = asyncio.Semaphore(config.redis_in_flight)

    def _namespace(self, epoch: int | None) -> str:
        return f"{self.config.key_prefix}{self.epoch if epoch is None else epoch}:"

    def value_key(self, key: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}value:{key}"

    def tag_key(self, tag: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}tag:{tag}"

    def tombstone_key(self, kind: str, name: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}dropped:{kind}:{name}"

    @property
    def epoch_key(self) -> str:
        return f"{self.config.key_prefix}epoch"

    async def load_epoch(self) -> int | None:
        """Agree on the epoch with Redis: adopt a newer one, or put ours back if Redis has an older
        one (it restarted empty); None if Redis could not be asked."""
        return await self._epoch_script(_SYNC_EPOCH)

    async def bump_epoch(self) -> int | None:
        """Start a new epoch, past both Redis's and ours (everything stored so far becomes
        unreachable); None if Redis could not be asked."""
        return await self._epoch_script(_BUMP_EPOCH)

    async def _epoch_script(self, script: str) -> int | None:
        async def run(client: redis.Redis) -> int:
            return int(await client.eval(script, 1, self.epoch_key, self.epoch))

        epoch = await self.call("epoch", run, invalidates=True)
        if epoch is not None:
            self.epoch = max(self.epoch, epoch)
        return epoch

    async def call(
        self, operation: str, call: Callable[[redis.Redis], Awaitable[T]], *, invalidates: bool = False
    ) -> T | None:
        """Run `call` on the client through the breaker with a timeout; None if it could not.

        A read or a store waiting longer than `redis_timeout_s` for a place among the calls in
        flight is skipped (counted as busy: the cache goes on without L2 for it). A call that
        `invalidates` waits its turn however long: skipping it would make the cache clear
        everything, a flush caused by nothing but this process being busy."""
        if self.client is None:
            return None
        client = self.client
        try:
            async with asyncio.timeout(None if invalidates else self.config.redis_timeout_s):
                await self._in_flight.acquire()
        except TimeoutError:
            CACHE_REDIS_BUSY.labels(operation).inc()
            return None
        try:
            async with self.breaker:
                return await asyncio.wait_for(call(client), self.config.redis_timeout_s)
        except BreakerOpen:
            CACHE_REDIS_FAILURES.labels(operation).inc()
            return None
        except REDIS_FAILURES as error:
            CACHE_REDIS_FAILURES.labels(operation).inc()
            log.warning("cache_redis_failed", operation=operation, error=type(error).__name__)
            if isinstance(error, (ConnectionError, OSError)) and not isinstance(error, REDIS_SATURATION):
                await _drop_idle_connections(client)
            return None
        finally:
            self._in_flight.release()

    async def set(
        self,
        key: str,
        blob: bytes,
        lifetime_s: float,
        tags: Iterable[str],
        loaded_since: float = 0.0,
        epoch: int | None = None,
        lock_token: str = "",
    ) -> bool | None:
        """Store `blob` for `lifetime_s` and add `key` to each tag's set (which lives at least as long),
        unless the key or a tag was invalidated after `loaded_since` (epoch seconds). `epoch`: the
        one the load began in (a value loaded before a clear lands in the old, unread namespace).
        `lock_token`: the loading lock this process holds on `key`, released in the same call.

        True: stored; False: refused (invalidated meanwhile); None: Redis could not be asked."""
        tags = tuple(tags)
        milliseconds = max(1, int(lifetime_s * 1000))
        keys = [
            self.value_key(key, epoch),
            self.tombstone_key("value", key, epoch),
            *(self.tombstone_key("tag", tag, epoch) for tag in tags),
        ]
        tag_keys = (self.tag_key(tag, epoch) for tag in tags)
        lock = self.lock_key(key, epoch)
        arguments = [blob, milliseconds, int(loaded_since * 1000), lock, lock_token, *tag_keys]

        async def store(client: redis.Redis) -> bool:
            return bool(await client.eval(_GUARDED_SET, len(keys), *keys, *arguments))  # type: ignore[arg-type]

        return await self.call("set", store)

    def lock_key(self, key: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}loading:{key}"

    async def get_or_claim(self, key: str, token: str, lock_s: float) -> tuple[bytes | None, Claim]:
        """The stored value of `key` and, unless it is fresh, a claim to load it for `lock_s`
        (0: no claim). (None, NONE) when Redis cannot be asked."""
        milliseconds = max(1, int(lock_s * 1000)) if lock_s > 0 else 0

        async def read(client: redis.Redis) -> tuple[bytes | None, Claim]:
            keys = (self.value_key(key), self.lock_key(key))
            value, state = await client.eval(_GET_OR_CLAIM, 2, *keys, token, milliseconds, time.time())
            return (value or None), Claim(int(state))

        answer = await self.call("get", read)
        return answer if answer is not None else (None, Claim.NONE)

    async def release(self, key: str, token: str) -> None:
        """Give the claim back if it is still ours (it may have expired and passed on)."""

        async def release(client: redis.Redis) -> None:
            await client.eval(_RELEASE, 1, self.lock_key(key), token)

        await self.call("unlock", release)

    async def get_or_loading(self, key: str) -> tuple[bytes | None, bool]:
        """The stored value of `key` and whether another process still claims to be loading it;
        (None, False) when Redis cannot be asked."""

        async def read(client: redis.Redis) -> tuple[bytes | None, bool]:
            value, claim = await client.mget(self.value_key(key), self.lock_key(key))
            return (value if isinstance(value, bytes) else None), claim is not None

        answer = await self.call("get", read)
        return answer if answer is not None else (None, False)

    async def delete(self, keys: Iterable[str], tags: Iterable[str]) -> bool:
        """Delete `keys`, every key in the sets of `tags`, and those sets; leave tombstones behind.
        False if Redis could not be asked."""
        keys, tags = tuple(keys), tuple(tags)
        value_keys = [self.value_key(key) for key in keys]
        tag_keys = [self.tag_key(tag) for tag in tags]

        tombstones = [
            *(self.tombstone_key("value", key) for key in keys),
            *(self.tombstone_key("tag", tag) for tag in tags),
        ]

        async def delete(client: redis.Redis) -> bool:
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
            return True

        return bool(await self.call("delete", delete, invalidates=True))

    async def publish(self, message: bytes) -> bool:
        """False if Redis could not be asked."""

        async def publish(client: redis.Redis) -> bool:
            await client.publish(self.config.channel, message)
            return True

        return bool(await self.call("publish", publish, invalidates=True))
