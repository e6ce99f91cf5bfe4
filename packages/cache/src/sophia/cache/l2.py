"""L2: entries in Redis, tags as generation counters, every call behind a breaker and a timeout.

Nothing here raises a Redis error: a failed or skipped call is counted, logged and answered as
"nothing there", so callers go on with L1 and the loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple, TypeVar

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

# A tag's generation: a counter in Redis that every invalidation of the tag moves forward, so an
# invalidation costs O(1) per tag however many entries carry it (no set of keys to read and
# delete). A tagged value is stored as `stamp|blob`, the stamp being its tags' generations when
# its load began, and read only while the stamp is still theirs. A generation that is missing
# (never moved, expired or evicted) starts at Redis's clock in microseconds, past any it had, so
# a value stamped before can never match again. Scripts here share these two functions.
_STAMPS = """
local function stamp_of(first, ttl_ms)
  local parts = {}
  for i = first, #KEYS do
    local generation = redis.call('GET', KEYS[i])
    if not generation then
      local now = redis.call('TIME')
      generation = now[1] .. string.format('%06d', tonumber(now[2]))
      redis.call('SET', KEYS[i], generation, 'PX', ttl_ms)
    end
    parts[#parts + 1] = generation
  end
  return table.concat(parts, ',')
end
local function unstamped(value, stamp)
  local bar = string.find(value, '|', 1, true)
  if bar and string.sub(value, 1, bar - 1) == stamp then return string.sub(value, bar + 1) end
  return false
end
"""

# Store a value unless it was invalidated after its load began: another process's invalidation may
# land between this process reading the database and writing Redis, and the old value must not
# outlive it. By key, a tombstone (set by `delete`) holds the invalidation's time for
# `tombstone_s`; by tag, the stamp the load began under must still be the tags' generations.
# KEYS: the value key, its tombstone, then the tags' generation keys; ARGV: blob, px, load start
# (epoch ms), the loading lock's key and our token ('' if we hold none), the stamp the load began
# under ('': take the current one), the generations' TTL (ms).
# One Valkey node: the lock key is not declared as a KEY. The lock goes either way.
_GUARDED_SET = (
    _STAMPS
    + """
if ARGV[5] ~= '' and redis.call('GET', ARGV[4]) == ARGV[5] then redis.call('DEL', ARGV[4]) end
local dropped = redis.call('GET', KEYS[2])
if dropped and tonumber(dropped) >= tonumber(ARGV[3]) then return 0 end
if #KEYS == 2 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
local stamp = stamp_of(3, ARGV[7])
if ARGV[6] ~= '' and ARGV[6] ~= stamp then return 0 end
redis.call('SET', KEYS[1], stamp .. '|' .. ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# Drop values by key (leaving tombstones), move tags' generations forward and tell the other
# processes, in one call (one round trip a write, not two). KEYS: n value keys, their n
# tombstones, then generation keys; ARGV: n, now (epoch ms), the tombstones' px, the generations'
# TTL (ms), the channel and the message ('': publish nothing).
_INVALIDATE = """
local n = tonumber(ARGV[1])
for i = 1, n do
  redis.call('SET', KEYS[n + i], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[i])
end
if #KEYS > 2 * n then
  local now = redis.call('TIME')
  local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  for i = 2 * n + 1, #KEYS do
    local held = tonumber(redis.call('GET', KEYS[i]) or '0')
    redis.call('SET', KEYS[i], string.format('%.0f', math.max(held + 1, now_us)), 'PX', ARGV[4])
  end
end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
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
# loading lock, then the tags' generation keys; ARGV: token, lock px (0: no lock), now (epoch s),
# the generations' TTL (ms). Reply: {value or '', state, stamp}, state 0 no claim made, 1
# claimed, 2 another holds it. A value's fresh-until is the big-endian double after its version
# and flags bytes (entry.py's header).
_GET_OR_CLAIM = (
    _STAMPS
    + """
local stamp = stamp_of(3, ARGV[4])
local value = redis.call('GET', KEYS[1])
if value and #KEYS > 2 then value = unstamped(value, stamp) end
local px = tonumber(ARGV[2])
if value and (px == 0 or (#value >= 26 and struct.unpack('>d', value, 3) > tonumber(ARGV[3]))) then
  return {value, 0, stamp}
end
if px == 0 then return {value or '', 0, stamp} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', px) then return {value or '', 1, stamp} end
return {value or '', 2, stamp}
"""
)
# The value and whether another process claims to be loading it. KEYS and ARGV[1] as for
# `_GET_OR_CLAIM`'s keys and generations' TTL. Reply: {value or '', 1 if claimed else 0}.
_GET_OR_LOADING = (
    _STAMPS
    + """
local value = redis.call('GET', KEYS[1])
if value and #KEYS > 2 then value = unstamped(value, stamp_of(3, ARGV[1])) end
local claimed = 0
if redis.call('EXISTS', KEYS[2]) == 1 then claimed = 1 end
return {value or '', claimed}
"""
)
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


GENERATION_TTL_MS = 86_400_000
"""How long a tag's generation lives unmoved: past it, it starts again from Redis's clock (its
values become misses, never stale reads), so unread tags do not accumulate."""


class Lookup(NamedTuple):
    """What `get_or_claim` found: the value (None: a miss), the claim, and the stamp of the tags'
    generations to store a load under (None: Redis could not be asked)."""

    value: bytes | None
    claim: Claim
    stamp: str | None


async def _drop_idle_connections(client: redis.Redis) -> None:
    """After a connection failure the pooled ones are likely dead too: the next call dials afresh."""
    with contextlib.suppress(*REDIS_FAILURES):
        await client.connection_pool.disconnect(inuse_connections=False)


class RedisTier:
    """Values under `{prefix}{epoch}:value:{key}`, tags' generations under
    `{prefix}{epoch}:generation:{tag}`.

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

    def generation_key(self, tag: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}generation:{tag}"

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
        stamp: str = "",
    ) -> bool | None:
        """Store `blob` for `lifetime_s` unless it was invalidated after its load began: by key
        after `loaded_since` (epoch seconds), by tag since `stamp` (the tags' generations the load
        began under, from `get_or_claim`; '': the current ones). `epoch`: the one the load began in
        (a value loaded before a clear lands in the old, unread namespace). `lock_token`: the
        loading lock this process holds on `key`, released in the same call.

        True: stored; False: refused (invalidated meanwhile); None: Redis could not be asked."""
        milliseconds = max(1, int(lifetime_s * 1000))
        keys = [
            self.value_key(key, epoch),
            self.tombstone_key("value", key, epoch),
            *(self.generation_key(tag, epoch) for tag in tags),
        ]
        lock = self.lock_key(key, epoch)
        arguments = [blob, milliseconds, int(loaded_since * 1000), lock, lock_token, stamp, GENERATION_TTL_MS]

        async def store(client: redis.Redis) -> bool:
            return bool(await client.eval(_GUARDED_SET, len(keys), *keys, *arguments))  # type: ignore[arg-type]

        return await self.call("set", store)

    def lock_key(self, key: str, epoch: int | None = None) -> str:
        return f"{self._namespace(epoch)}loading:{key}"

    async def get_or_claim(self, key: str, token: str, lock_s: float, tags: Iterable[str] = ()) -> Lookup:
        """The stored value of `key` (if its tags have not moved since it was stored) and, unless it
        is fresh, a claim to load it for `lock_s` (0: no claim); (None, NONE, None) when Redis
        cannot be asked."""
        milliseconds = max(1, int(lock_s * 1000)) if lock_s > 0 else 0
        keys = (self.value_key(key), self.lock_key(key), *(self.generation_key(tag) for tag in tags))

        async def read(client: redis.Redis) -> Lookup:
            arguments = (token, milliseconds, time.time(), GENERATION_TTL_MS)
            value, state, stamp = await client.eval(_GET_OR_CLAIM, len(keys), *keys, *arguments)
            return Lookup(value or None, Claim(int(state)), stamp.decode())

        answer = await self.call("get", read)
        return answer if answer is not None else Lookup(None, Claim.NONE, None)

    async def release(self, key: str, token: str) -> None:
        """Give the claim back if it is still ours (it may have expired and passed on)."""

        async def release(client: redis.Redis) -> None:
            await client.eval(_RELEASE, 1, self.lock_key(key), token)

        await self.call("unlock", release)

    async def get_or_loading(self, key: str, tags: Iterable[str] = ()) -> tuple[bytes | None, bool]:
        """The stored value of `key` (as `get_or_claim` reads it) and whether another process still
        claims to be loading it; (None, False) when Redis cannot be asked."""
        keys = (self.value_key(key), self.lock_key(key), *(self.generation_key(tag) for tag in tags))

        async def read(client: redis.Redis) -> tuple[bytes | None, bool]:
            value, claimed = await client.eval(_GET_OR_LOADING, len(keys), *keys, GENERATION_TTL_MS)
            return (value or None), bool(claimed)

        answer = await self.call("get", read)
        return answer if answer is not None else (None, False)

    async def delete(self, keys: Iterable[str], tags: Iterable[str], message: bytes = b"") -> bool:
        """Delete `keys` (leaving tombstones) and move `tags`' generations forward: O(1) per key
        and per tag, whatever is cached under them; and publish `message` (if any) in the same
        call. False if Redis could not be asked (then none of it was done)."""
        keys = tuple(keys)
        script_keys = [
            *(self.value_key(key) for key in keys),
            *(self.tombstone_key("value", key) for key in keys),
            *(self.generation_key(tag) for tag in tags),
        ]
        if not script_keys and not message:
            return True
        tombstone_ms = int(self.config.tombstone_s * 1000)

        async def delete(client: redis.Redis) -> bool:
            now_ms = int(time.time() * 1000)
            arguments = (len(keys), now_ms, tombstone_ms, GENERATION_TTL_MS, self.config.channel, message)
            await client.eval(_INVALIDATE, len(script_keys), *script_keys, *arguments)
            return True

        return bool(await self.call("delete", delete, invalidates=True))

    async def publish(self, channel: str, message: bytes) -> bool:
        """False if Redis could not be asked."""

        async def publish(client: redis.Redis) -> bool:
            await client.publish(channel, message)
            return True

        return bool(await self.call("publish", publish, invalidates=True))
