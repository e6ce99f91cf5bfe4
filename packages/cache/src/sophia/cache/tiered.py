"""The tiered cache: L1 in process, L2 in Redis, then the loader; stale on purpose, never down.

Why not cashews or aiocache: neither offers a size-bounded L1 of bytes with tags whose entries
other processes drop through pub/sub, stale-if-error, and a hit that costs one dict lookup; the
core here is small enough to own (comparison in docs/decisions/0003-cache-core.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import redis.asyncio as redis

from sophia.cache.entry import Entry, Loaded, decode, encode, make_entry, make_etag
from sophia.cache.invalidation import Invalidation, InvalidationListener
from sophia.cache.l1 import MemoryCache
from sophia.cache.l2 import Claim, RedisTier
from sophia.cache.metrics import (
    CACHE_EVICTIONS,
    CACHE_HITS,
    CACHE_INVALIDATIONS,
    CACHE_L1_BYTES,
    CACHE_LOAD_SECONDS,
    CACHE_LOCK_WAITS,
    CACHE_MISSES,
    CACHE_STALE_SERVES,
)
from sophia.cache.ttl import CacheConfig, TtlClass
from sophia.core.errors import NotFound, SophiaError, Unavailable
from sophia.shared.logging import get_logger

Loader = Callable[[], Awaitable[bytes | Loaded]]

LOCK_POLL_FIRST_S = 0.002
LOCK_POLL_MAX_S = 0.01  # one GET per 10 ms per waiting process (one waiter each: single-flight)

log = get_logger(__name__)


@dataclass(slots=True)
class _Claim:
    """This process's claim on loading one key in Redis: its token, and whether it still holds it."""

    token: str
    held: bool = False


@dataclass(slots=True)
class _Watch:
    """One key being filled in this process: what was invalidated since the fill began that
    concerns it (the key itself or a clear, the tags dropped meanwhile). Only a value such an
    invalidation covers is stale: counting every invalidation of any key threw away most loads
    while writes went on."""

    stale: bool = False
    """The key itself was invalidated, or everything was."""
    dropped_tags: set[str] = field(default_factory=set)

    def current(self, entry: Entry) -> bool:
        return not self.stale and self.dropped_tags.isdisjoint(entry.tags)


@dataclass(frozen=True, slots=True)
class _Stored:
    """Where a load began: its watch, Redis's epoch, and the stamp of the entry's tags'
    generations (None: Redis could not be asked). A value is kept only where none has moved."""

    watch: _Watch
    epoch: int
    stamp: str | None


@dataclass(frozen=True, slots=True)
class CacheResult:
    """What a lookup returns: the bytes, their ETag, and whether they are served stale (and why)."""

    value: bytes
    etag: str
    stale: bool = False
    stale_reason: str | None = None


class TieredCache:
    """`get_or_load` through L1, L2 and the loader; `invalidate` here, in Redis and in every process.

    An async context manager: entering starts the pub/sub listener task, leaving cancels it and
    every background refresh. `redis_client` None runs with L1 and the loader only.

    `hears_writes=False`: this process caches only what no write makes stale (the models'
    predictions, keyed by their input), so it hears other processes' clears but not every write's
    keys and tags; waking for each of those cost an idle process 150-300 µs of CPU a message
    (docs/cache.md). It still invalidates for others as any cache does.
    """

    def __init__(
        self,
        redis_client: redis.Redis | None,
        config: CacheConfig | None = None,
        *,
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        hears_writes: bool = True,
    ) -> None:
        self.config = config or CacheConfig()
        self.name = name
        self.origin = uuid.uuid4().hex
        self.l1 = MemoryCache(self.config.l1_max_bytes, clock)
        self.l2 = RedisTier(redis_client, self.config)
        self._clock = clock
        self._flights: dict[str, asyncio.Task[CacheResult]] = {}
        self._claims = itertools.count()
        """Numbers this process's loading claims: unique with `origin` (uuid4 was 1 % of a busy API)."""
        self._watches: dict[str, _Watch] = {}
        """The keys being filled (one fill a key at a time: `_flight`)."""
        self._l1_hits = CACHE_HITS.labels("l1")
        self._missed = False
        """An invalidation could not reach Redis: clear everything once it can."""
        self._listener: InvalidationListener | None = None
        self._listener_task: asyncio.Task[None] | None = None
        if redis_client is not None:
            clears = self.config.clear_channel
            self._listener = InvalidationListener(
                redis_client,
                (self.config.channel, clears) if hears_writes else (clears,),
                self._apply,
                self._on_subscribed,
                reconnect_max_s=self.config.reconnect_max_s,
                confirm_timeout_s=self.config.redis_timeout_s * 2,
            )

    async def __aenter__(self) -> TieredCache:
        if self._listener is not None:
            listen = self._listener.run()
            self._listener_task = asyncio.create_task(listen, name=f"cache-listener-{self.name}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener.tried.wait(), self.config.redis_timeout_s * 4)
            if not self.listening:
                log.warning("cache_listener_not_subscribed", cache=self.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._flights.values()]
        if self._listener_task is not None:
            tasks.append(self._listener_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flights.clear()

    @property
    def owes_clear(self) -> bool:
        """Whether an invalidation of this process missed Redis: the other processes are owed a
        clear, sent once Redis answers (a process about to exit should say it could not)."""
        return self._missed

    @property
    def listening(self) -> bool:
        """Whether invalidations from other processes are arriving now."""
        return self._listener is not None and self._listener.subscribed.is_set()

    async def get_or_load(
        self,
        key: str,
        loader: Loader,
        ttl_class: str = "api",
        *,
        tags: Iterable[str] = (),
        ttl_s: float | None = None,
    ) -> CacheResult:
        """The value for `key`: from L1, else L2, else `loader()` (once per key however many ask).

        Raises `NotFound` (also from a cached miss) and whatever the loader raises when there is
        no value to fall back on; never a Redis error.
        """
        if not self.config.enabled:
            loaded = await loader()
            if isinstance(loaded, Loaded):
                return CacheResult(loaded.value, loaded.etag)
            return CacheResult(loaded, make_etag(loaded))
        entry = self.l1.get(key)
        if entry is not None:
            now = self._clock()
            if now < entry.fresh_until:
                self._l1_hits.inc()
                return _result(entry)
            if now < entry.revalidate_until:
                CACHE_STALE_SERVES.labels("revalidate").inc()
                self._flight(key, loader, self.config.ttl_class(ttl_class, ttl_s), tuple(tags), entry)
                return _result(entry, "revalidate")
        CACHE_MISSES.labels("l1").inc()
        policy = self.config.ttl_class(ttl_class, ttl_s)
        return await asyncio.shield(self._flight(key, loader, policy, tuple(tags), entry))

    def peek(self, key: str) -> Entry | None:
        """The L1 entry of `key` if it is fresh and a value, counted as an L1 hit; else None,
        uncounted (the caller goes on to `get_or_load`, which counts what happens there)."""
        if not self.config.enabled:
            return None
        entry = self.l1.get(key)
        if entry is None or entry.missing or self._clock() >= entry.fresh_until:
            return None
        self._l1_hits.inc()
        return entry

    async def invalidate(self, keys: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        """Drop `keys` and everything tagged with `tags`: here at once, then in Redis and other processes.

        One that cannot reach Redis is not lost: the next call that can (or the subscription coming
        back) clears everything instead, since what was missed is no longer known."""
        invalidation = Invalidation(self.origin, tuple(keys), tuple(tags))
        self._drop(invalidation)
        if self._missed:
            await self.clear()
            return
        reached = await self.l2.delete(invalidation.keys, invalidation.tags, invalidation.encode())
        if not reached and self.l2.client is not None:
            self._missed = True
            log.warning("cache_invalidation_deferred", cache=self.name)

    async def clear(self) -> None:
        """Drop everything: here at once, in Redis by starting a new epoch, and in every process.

        O(1) however much is cached (a write touching too many entries to name uses this). With
        Redis down only this process's L1 is dropped; other processes drop theirs when their
        subscription comes back, and Redis's old entries live out their TTL."""
        self._forget_everything("cleared")
        epoch = await self.l2.bump_epoch()
        published = epoch is not None and await self.l2.publish(
            self.config.clear_channel, Invalidation(self.origin, epoch=epoch).encode()
        )
        self._missed = not published and self.l2.client is not None

    def _flight(
        self, key: str, loader: Loader, policy: TtlClass, tags: tuple[str, ...], fallback: Entry | None
    ) -> asyncio.Task[CacheResult]:
        """The one task filling `key` in this process, started if none runs."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, loader, policy, tags, fallback))
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return task

    def _landed(self, key: str, task: asyncio.Task[CacheResult]) -> None:
        # A key has one flight at a time and a new one starts only after this removes it.
        self._flights.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: background refreshes have nobody awaiting them

    async def _fill(
        self, key: str, loader: Loader, policy: TtlClass, tags: tuple[str, ...], fallback: Entry | None
    ) -> CacheResult:
        watch = self._watches[key] = _Watch()
        epoch = self.l2.epoch
        claim = _Claim(f"{self.origin}{next(self._claims)}" if self.config.lock_s > 0 else "")
        try:
            blob, state, stamp = await self.l2.get_or_claim(key, claim.token, self.config.lock_s, tags)
            claim.held = state is Claim.CLAIMED
            now = self._clock()
            stored = decode(blob, now) if blob is not None else None
            if stored is not None and now < stored.fresh_until:
                CACHE_HITS.labels("l2").inc()
                self._keep(key, stored, watch)
                return _result(stored)
            CACHE_MISSES.labels("l2").inc()
            if stored is not None and (fallback is None or stored.stale_until > fallback.stale_until):
                fallback = stored
            if state is Claim.HELD:  # another process is loading it: its value beats a second query
                other = await self._await_other_loader(key, tags)
                if other is not None:
                    self._keep(key, other, watch)
                    return _result(other)
            stored_as = _Stored(watch, epoch, stamp)
            return await self._load(key, loader, policy, tags, fallback, stored_as, claim)
        finally:
            if self._watches.get(key) is watch:
                del self._watches[key]
            if claim.held:  # not released by storing: the load failed or was overtaken
                await self.l2.release(key, claim.token)

    async def _await_other_loader(self, key: str, tags: tuple[str, ...]) -> Entry | None:
        """The fresh value another process is loading, polled from Redis until its claim ends."""
        deadline = time.monotonic() + self.config.lock_s
        delay = LOCK_POLL_FIRST_S
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOCK_POLL_MAX_S)
            blob, loading = await self.l2.get_or_loading(key, tags)
            now = self._clock()
            entry = decode(blob, now) if blob is not None else None
            if entry is not None and now < entry.fresh_until:
                CACHE_LOCK_WAITS.labels("value").inc()
                return entry
            if not loading:  # it failed, or Redis went away: load here
                CACHE_LOCK_WAITS.labels("released").inc()
                return None
        CACHE_LOCK_WAITS.labels("timeout").inc()
        return None

    async def _load(
        self,
        key: str,
        loader: Loader,
        policy: TtlClass,
        tags: tuple[str, ...],
        fallback: Entry | None,
        stored_as: _Stored,
        claim: _Claim,
    ) -> CacheResult:
        started = time.perf_counter()
        loaded_since = time.time()  # wall clock: Redis compares it with other processes' invalidations
        try:
            loaded = await loader()
        except NotFound as error:
            CACHE_LOAD_SECONDS.labels("not_found").observe(time.perf_counter() - started)
            negative = TtlClass(self.config.negative_ttl_s)
            entry = make_entry(error.detail.encode(), negative, self._clock(), tags, missing=True)
            await self._store(key, entry, stored_as, loaded_since, claim)
            raise
        except Exception as error:
            CACHE_LOAD_SECONDS.labels("error").observe(time.perf_counter() - started)
            if isinstance(error, SophiaError) and not isinstance(error, Unavailable):
                raise
            if fallback is None or fallback.missing or self._clock() >= fallback.stale_until:
                raise
            CACHE_STALE_SERVES.labels("error").inc()
            log.warning("cache_served_stale", cache=self.name, key=key, error=type(error).__name__)
            return _result(fallback, "error")
        CACHE_LOAD_SECONDS.labels("ok").observe(time.perf_counter() - started)
        value, etag = (loaded.value, loaded.etag) if isinstance(loaded, Loaded) else (loaded, None)
        entry = make_entry(value, policy, self._clock(), tags, etag=etag)
        await self._store(key, entry, stored_as, loaded_since, claim)
        return _result(entry)

    async def _store(
        self, key: str, entry: Entry, stored_as: _Stored, loaded_since: float, claim: _Claim
    ) -> None:
        if not self._keep(key, entry, stored_as.watch):
            return
        if entry.tags and stored_as.stamp is None:
            return  # Redis could not say the tags' generations when the load began: L1 only
        now = self._clock()
        lifetime_s = entry.stale_until - now
        blob = encode(entry, now)
        token = claim.token if claim.held else ""
        stored = await self.l2.set(
            key,
            blob,
            lifetime_s,
            entry.tags,
            loaded_since,
            stored_as.epoch,
            token,
            stamp=stored_as.stamp or "",
        )
        if stored is not None:
            claim.held = False  # the same script let it go
        if stored is False:  # refused: invalidated elsewhere after this load began
            self.l1.delete(key)

    def _keep(self, key: str, entry: Entry, watch: _Watch) -> bool:
        """Put `entry` in L1 unless an invalidation of it arrived while it was loading."""
        if not watch.current(entry):
            return False
        evicted = self.l1.set(key, entry)
        if evicted:
            CACHE_EVICTIONS.inc(evicted)
        CACHE_L1_BYTES.labels(self.name).set(self.l1.bytes)
        return True

    def _drop(self, invalidation: Invalidation) -> None:
        for key in invalidation.keys:
            self.l1.delete(key)
            if (watch := self._watches.get(key)) is not None:
                watch.stale = True
        for tag in invalidation.tags:
            self.l1.delete_by_tag(tag)
        if invalidation.tags:
            for watch in self._watches.values():
                watch.dropped_tags.update(invalidation.tags)
        CACHE_L1_BYTES.labels(self.name).set(self.l1.bytes)

    def _apply(self, invalidation: Invalidation) -> None:
        if invalidation.origin == self.origin:
            return
        CACHE_INVALIDATIONS.labels("remote").inc()
        if invalidation.epoch is not None:
            self.l2.epoch = max(self.l2.epoch, invalidation.epoch)
            self._forget_everything("cleared")
        else:
            self._drop(invalidation)

    async def _on_subscribed(self, after_gap: bool) -> None:
        """Catch up with the epoch; after a gap, drop L1 too (invalidations may have been missed).

        Redis not answering for the epoch, or for the clear owed since an invalidation missed it,
        keeps the gap open (L1 kept until Redis is back; the clear tried again then)."""
        before = self.l2.epoch
        if await self.l2.load_epoch() is None:
            raise ConnectionError("the cache epoch could not be read after subscribing")
        if self._missed:
            await self.clear()
            if self._missed:
                raise ConnectionError("the clear owed since an invalidation missed Redis did not reach it")
        elif after_gap or self.l2.epoch != before:
            self._forget_everything("resubscribed" if after_gap else "cleared")

    def _forget_everything(self, reason: str) -> None:
        if len(self.l1):
            log.info("cache_l1_dropped", cache=self.name, entries=len(self.l1), reason=reason)
        for watch in self._watches.values():  # every fill begun before a clear is stale
            watch.stale = True
        self.l1.clear()
        CACHE_L1_BYTES.labels(self.name).set(0)


def _result(entry: Entry, stale_reason: str | None = None) -> CacheResult:
    if entry.missing:
        raise NotFound(entry.value.decode())
    return CacheResult(entry.value, entry.etag, stale_reason is not None, stale_reason)
