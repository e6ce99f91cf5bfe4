import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as redis
from metrics import sample
from waiting import eventually

from sophia.cache import CacheConfig, Loaded, TieredCache, TtlClass
from sophia.cache import invalidation as invalidation_module
from sophia.cache.invalidation import Invalidation
from sophia.cache.l2 import Claim
from sophia.core.errors import Invalid, NotFound
from sophia.shared.resilience import BreakerState

from .conftest import Clock, CountingLoader


@pytest.fixture
async def cache(redis_client: redis.Redis, config: CacheConfig) -> AsyncIterator[TieredCache]:
    async with TieredCache(redis_client, config, name="first") as tiered:
        yield tiered


@pytest.fixture
async def other_process(settings: object, config: CacheConfig) -> AsyncIterator[TieredCache]:
    """A second cache with its own connection: what another API process would hold."""
    client = redis.Redis.from_url(settings.redis_url)  # type: ignore[attr-defined]
    async with TieredCache(client, config, name="second") as tiered:
        yield tiered
    await client.aclose()


async def test_a_miss_loads_once_and_fills_both_tiers(cache: TieredCache, redis_client: redis.Redis) -> None:
    loader = CountingLoader(b"payload")
    first = await cache.get_or_load("record:1", loader)
    second = await cache.get_or_load("record:1", loader)
    assert first.value == second.value == b"payload"
    assert first.etag == second.etag
    assert not first.stale
    assert loader.calls == 1
    assert "record:1" in cache.l1
    assert await redis_client.exists(cache.l2.value_key("record:1")) == 1


async def test_l2_answers_once_l1_is_cleared(cache: TieredCache) -> None:
    loader = CountingLoader(b"payload")
    await cache.get_or_load("record:1", loader, tags=("list",))
    cache.l1.clear()
    result = await cache.get_or_load("record:1", loader, tags=("list",))
    assert result.value == b"payload"
    assert loader.calls == 1
    assert "record:1" in cache.l1
    assert cache.l1.tags() == {"list"}  # tags came back from L2 with the value


async def test_a_thousand_concurrent_misses_call_the_loader_once(cache: TieredCache) -> None:
    calls = 0

    async def slow_loader() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"loaded once"

    results = await asyncio.gather(*(cache.get_or_load("hot", slow_loader) for _ in range(1_000)))
    assert calls == 1
    assert {result.value for result in results} == {b"loaded once"}


async def test_an_entry_expires_from_redis_after_its_ttl(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    short = CacheConfig(ttl_classes={"tiny": TtlClass(fresh_s=0.2)}, key_prefix=config.key_prefix)
    loader = CountingLoader()
    async with TieredCache(redis_client, short) as cache:
        await cache.get_or_load("brief", loader, "tiny")
        value_key = cache.l2.value_key("brief")
        assert await redis_client.exists(value_key) == 1
        started = time.perf_counter()
        while await redis_client.exists(value_key):
            assert time.perf_counter() - started < 3, "Redis kept the value past its TTL"
            await asyncio.sleep(0.02)
        await eventually(lambda: cache.l1.get("brief") is None, timeout_s=0.5)
        await cache.get_or_load("brief", loader, "tiny")
    assert loader.calls == 2


async def test_a_per_key_ttl_overrides_the_class(config: CacheConfig, clock: Clock) -> None:
    loader = CountingLoader()
    async with TieredCache(None, config, clock=clock) as cache:
        await cache.get_or_load("key", loader, "api", ttl_s=1)
        clock.now += 1.5  # past the override, inside the class's revalidate window
        result = await cache.get_or_load("key", loader, "api", ttl_s=1)
    assert result.stale
    assert result.stale_reason == "revalidate"


async def test_stale_while_revalidate_serves_the_old_value_then_refreshes_once(
    config: CacheConfig, clock: Clock
) -> None:
    loader = CountingLoader(b"old")
    async with TieredCache(None, config, clock=clock) as cache:
        await cache.get_or_load("key", loader, "short")
        clock.now += 11  # fresh for 10 s, revalidatable for 5 more
        loader.value = b"new"
        results = [await cache.get_or_load("key", loader, "short") for _ in range(10)]
        assert {result.value for result in results} == {b"old"}
        assert all(result.stale_reason == "revalidate" for result in results)
        await eventually(lambda: loader.calls == 2 and not cache._flights)
        refreshed = await cache.get_or_load("key", loader, "short")
    assert refreshed.value == b"new"
    assert not refreshed.stale
    assert loader.calls == 2


async def test_stale_if_error_serves_the_last_value_within_its_window_only(
    config: CacheConfig, clock: Clock
) -> None:
    loader = CountingLoader(b"last good")
    async with TieredCache(None, config, clock=clock) as cache:
        await cache.get_or_load("key", loader, "short")
        clock.now += 20  # past revalidation (15 s), inside stale-if-error (40 s)
        loader.error = ConnectionError("postgres is down")
        result = await cache.get_or_load("key", loader, "short")
        assert result.value == b"last good"
        assert result.stale
        assert result.stale_reason == "error"
        clock.now += 21
        with pytest.raises(ConnectionError):
            await cache.get_or_load("key", loader, "short")


async def test_an_error_that_is_an_answer_is_not_papered_over(config: CacheConfig, clock: Clock) -> None:
    loader = CountingLoader(b"last good")
    async with TieredCache(None, config, clock=clock) as cache:
        await cache.get_or_load("key", loader, "short")
        clock.now += 20
        loader.error = Invalid("bad filter")
        with pytest.raises(Invalid):
            await cache.get_or_load("key", loader, "short")


async def test_not_found_is_cached_briefly_in_both_tiers(
    cache: TieredCache, other_process: TieredCache
) -> None:
    loader = CountingLoader()
    loader.error = NotFound("record 7 does not exist")
    for tiered in (cache, cache, other_process):
        with pytest.raises(NotFound, match="record 7"):
            await tiered.get_or_load("record:7", loader)
    assert loader.calls == 1


async def test_not_found_is_asked_again_after_the_negative_ttl(config: CacheConfig, clock: Clock) -> None:
    loader = CountingLoader(b"created since")
    loader.error = NotFound("not yet")
    async with TieredCache(None, config, clock=clock) as cache:
        with pytest.raises(NotFound):
            await cache.get_or_load("key", loader)
        loader.error = None
        clock.now += config.negative_ttl_s + 0.1
        assert (await cache.get_or_load("key", loader)).value == b"created since"
    assert loader.calls == 2


async def test_invalidating_a_key_reaches_another_process_quickly(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis
) -> None:
    loader = CountingLoader()
    await cache.get_or_load("record:1", loader)
    await other_process.get_or_load("record:1", loader)
    assert "record:1" in other_process.l1
    started = time.perf_counter()
    await cache.invalidate(keys=["record:1"])
    assert "record:1" not in cache.l1
    assert await redis_client.exists(cache.l2.value_key("record:1")) == 0
    await eventually(lambda: "record:1" not in other_process.l1, timeout_s=1.0)
    latency_ms = (time.perf_counter() - started) * 1000
    print(f"cross-process invalidation by key: {latency_ms:.1f} ms")
    assert latency_ms < 1000


async def test_invalidating_a_tag_drops_its_keys_everywhere(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis
) -> None:
    loader = CountingLoader()
    for key in ("page:1", "page:2"):
        await cache.get_or_load(key, loader, tags=("records",))
        await other_process.get_or_load(key, loader, tags=("records",))
    await cache.get_or_load("unrelated", loader)
    started = time.perf_counter()
    await cache.invalidate(tags=["records"])
    assert cache.l1.tags() == frozenset()
    # in Redis the pages are left to expire, unreadable: the tag's generation moved on
    assert (await cache.l2.get_or_claim("page:1", "", 0, ("records",))).value is None
    assert (await cache.l2.get_or_claim("page:2", "", 0, ("records",))).value is None
    assert (await cache.l2.get_or_claim("unrelated", "", 0)).value is not None
    await eventually(lambda: other_process.l1.tags() == frozenset(), timeout_s=1.0)
    latency_ms = (time.perf_counter() - started) * 1000
    print(f"cross-process invalidation by tag: {latency_ms:.1f} ms")
    assert latency_ms < 1000
    assert "unrelated" in cache.l1
    assert loader.calls == 3


async def test_a_load_overtaken_by_an_invalidation_is_not_kept(cache: TieredCache) -> None:
    loader = GatedLoader(b"written before the invalidation")
    pending = asyncio.create_task(cache.get_or_load("key", loader))
    await loader.started.wait()
    await cache.invalidate(keys=["key"])
    loader.release.set()
    assert (await pending).value == b"written before the invalidation"
    assert "key" not in cache.l1


async def test_a_load_outlives_invalidations_of_other_keys_and_tags(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis
) -> None:
    """Writes to other records go on while a record loads: its value is still kept in both tiers.
    (Counting every invalidation against every load kept most loads out of the cache while 75
    writes a second went on: the mixed load test's L1 hit rate was a third.)"""
    await cache.get_or_load("a third", CountingLoader())  # its drop shows the remote message came
    loader = GatedLoader(b"nobody wrote it")
    pending = asyncio.create_task(cache.get_or_load("key", loader, tags=("list:a",)))
    await loader.started.wait()
    await cache.invalidate(keys=["another"], tags=["list:b"])
    await other_process.invalidate(keys=["a third"])
    await eventually(lambda: "a third" not in cache.l1)
    loader.release.set()
    assert (await pending).value == b"nobody wrote it"
    assert "key" in cache.l1
    assert await redis_client.exists(cache.l2.value_key("key")) == 1


@pytest.mark.parametrize(
    ("overtake", "remote"),
    [
        pytest.param(
            lambda cache, other: other.invalidate(keys=["key"]), True, id="its key, from another process"
        ),
        pytest.param(
            lambda cache, other: cache.invalidate(tags=["list:b", "list:a"]), False, id="one of its tags"
        ),
        pytest.param(lambda cache, other: other.clear(), True, id="a clear, from another process"),
    ],
)
async def test_a_load_overtaken_by_what_covers_it_is_kept_nowhere(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis, overtake: object, remote: bool
) -> None:
    loader = GatedLoader(b"written before the invalidation")
    pending = asyncio.create_task(cache.get_or_load("key", loader, tags=("list:a",)))
    await loader.started.wait()
    received = sample("sophia_cache_invalidations_total", origin="remote")
    await overtake(cache, other_process)  # type: ignore[operator]
    if remote:
        await eventually(lambda: sample("sophia_cache_invalidations_total", origin="remote") > received)
    loader.release.set()
    assert (await pending).value == b"written before the invalidation"
    assert "key" not in cache.l1
    assert await redis_client.exists(cache.l2.value_key("key")) == 0


class GatedLoader:
    """A loader that starts, then waits to be released: a load in flight for as long as a test needs."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> bytes:
        self.started.set()
        await self.release.wait()
        return self.value


async def test_lookups_are_counted_per_tier_and_stale_serves_by_reason(
    cache: TieredCache, config: CacheConfig, clock: Clock
) -> None:
    before = {tier: sample("sophia_cache_hits_total", tier=tier) for tier in ("l1", "l2")}
    misses_before = sample("sophia_cache_misses_total", tier="l2")
    loader = CountingLoader()
    await cache.get_or_load("key", loader)  # misses both
    await cache.get_or_load("key", loader)  # L1 hit
    cache.l1.clear()
    await cache.get_or_load("key", loader)  # L2 hit
    assert sample("sophia_cache_hits_total", tier="l1") - before["l1"] == 1
    assert sample("sophia_cache_hits_total", tier="l2") - before["l2"] == 1
    assert sample("sophia_cache_misses_total", tier="l2") - misses_before == 1
    assert sample("sophia_cache_l1_bytes", cache="first") == cache.l1.bytes > 0

    stale_before = sample("sophia_cache_stale_serves_total", reason="error")
    async with TieredCache(None, config, clock=clock) as local:
        await local.get_or_load("key", loader, "short")
        clock.now += 20
        loader.error = TimeoutError()
        await local.get_or_load("key", loader, "short")
    assert sample("sophia_cache_stale_serves_total", reason="error") - stale_before == 1


async def test_a_cache_ignores_its_own_invalidation_messages(cache: TieredCache) -> None:
    await cache.get_or_load("key", CountingLoader())
    cache._apply(Invalidation(cache.origin, keys=("key",)))
    assert "key" in cache.l1
    cache._apply(Invalidation("another process", keys=("key",)))
    assert "key" not in cache.l1


async def test_a_loader_may_give_its_own_etag_and_every_tier_keeps_it(
    cache: TieredCache, other_process: TieredCache
) -> None:
    async def versioned() -> Loaded:
        return Loaded(b'{"version": 7}', "7")

    first = await cache.get_or_load("versioned", versioned)
    from_l1 = await cache.get_or_load("versioned", versioned)
    loader = CountingLoader()
    from_l2 = await other_process.get_or_load("versioned", loader)
    assert (first.etag, from_l1.etag, from_l2.etag) == ("7", "7", "7")
    assert from_l2.value == b'{"version": 7}'
    assert loader.calls == 0


async def test_a_disabled_cache_calls_the_loader_every_time(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    from dataclasses import replace

    loader = CountingLoader(b"fresh")
    async with TieredCache(redis_client, replace(config, enabled=False)) as cache:
        first = await cache.get_or_load("k", loader)
        second = await cache.get_or_load("k", loader)
    assert (first.value, second.value) == (b"fresh", b"fresh")
    assert first.etag == second.etag
    assert loader.calls == 2


async def test_a_load_overtaken_by_another_process_invalidation_is_not_stored_in_redis(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis, config: CacheConfig
) -> None:
    database_read = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_read() -> bytes:
        database_read.set()  # the old value is read from the database here ...
        await release.wait()  # ... and reaches the cache only after the other process's write
        return b"old"

    loading = asyncio.create_task(other_process.get_or_load("raced", slow_old_read))
    await database_read.wait()
    await cache.invalidate(keys=["raced"])  # the writer: committed, then invalidated
    release.set()
    assert (await loading).value == b"old"  # its caller still gets what it read
    assert await redis_client.get(cache.l2.value_key("raced")) is None  # but Redis does not keep it
    fresh = CountingLoader(b"new")
    assert (await cache.get_or_load("raced", fresh)).value == b"new"
    assert fresh.calls == 1


async def test_redis_refuses_a_value_loaded_before_an_invalidation_and_accepts_one_loaded_after(
    cache: TieredCache, redis_client: redis.Redis, config: CacheConfig
) -> None:
    before = time.time() - 1
    stamp_before = (await cache.l2.get_or_claim("tagged", "", 0, ("a-tag",))).stamp
    assert stamp_before
    await cache.l2.delete(["guarded"], ["a-tag"])
    after = time.time() + 0.001
    stamp_after = (await cache.l2.get_or_claim("tagged", "", 0, ("a-tag",))).stamp
    assert stamp_after
    assert stamp_after != stamp_before
    assert await cache.l2.set("guarded", b"old", 60, (), before) is False
    assert await cache.l2.set("tagged", b"old", 60, ("a-tag",), before, stamp=stamp_before) is False
    assert await cache.l2.set("guarded", b"new", 60, (), after) is True
    assert await cache.l2.set("tagged", b"new", 60, ("a-tag",), after, stamp=stamp_after) is True
    assert await redis_client.get(cache.l2.value_key("guarded")) == b"new"
    assert (await cache.l2.get_or_claim("tagged", "", 0, ("a-tag",))).value == b"new"
    assert (await cache.l2.get_or_claim("tagged", "", 0, ("a-tag",))).stamp == stamp_after


async def test_a_thousand_misses_in_each_of_two_processes_call_the_loader_once_in_all(
    cache: TieredCache, other_process: TieredCache
) -> None:
    loader = CountingLoader(b"loaded once")

    async def slow_loader() -> bytes:
        await asyncio.sleep(0.01)  # a query in flight while the other process's misses arrive
        return await loader()

    results = await asyncio.gather(
        *(tiered.get_or_load("hot", slow_loader) for tiered in (cache, other_process) for _ in range(1000))
    )
    assert {result.value for result in results} == {b"loaded once"}
    assert loader.calls == 1
    assert "hot" in cache.l1
    assert "hot" in other_process.l1


async def test_when_the_loading_process_fails_the_waiting_one_loads_itself(
    cache: TieredCache, other_process: TieredCache
) -> None:
    token = "held-by-a-process-that-will-fail"
    assert (await cache.l2.get_or_claim("contested", token, 5.0))[:2] == (None, Claim.CLAIMED)
    loader = CountingLoader(b"loaded by the waiter")
    waiting = asyncio.create_task(other_process.get_or_load("contested", loader))
    await eventually(lambda: "contested" in other_process._flights)
    assert loader.calls == 0
    await cache.l2.release("contested", token)  # the holder's loader raised: it lets go
    assert (await waiting).value == b"loaded by the waiter"
    assert loader.calls == 1
    assert sample("sophia_cache_lock_waits_total", outcome="released") >= 1


async def test_clear_drops_every_tier_in_every_process_without_touching_each_key(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis
) -> None:
    loader = CountingLoader(b"before")
    for key in ("a", "b"):
        await cache.get_or_load(key, loader, tags=("t",))
        await other_process.get_or_load(key, loader, tags=("t",))
    old_key = cache.l2.value_key("a")
    await cache.clear()
    assert len(cache.l1) == 0
    await eventually(lambda: len(other_process.l1) == 0)
    assert other_process.l2.epoch == cache.l2.epoch == 1
    assert await redis_client.exists(old_key) == 1  # unreachable now; it lives out its TTL
    assert loader.calls == 2  # one per key (Redis served the other process)
    loader.value = b"after"
    assert (await other_process.get_or_load("a", loader, tags=("t",))).value == b"after"
    assert (await cache.get_or_load("a", loader, tags=("t",))).value == b"after"
    assert loader.calls == 3  # loaded again once, then from Redis's new epoch


async def test_a_cache_that_hears_no_writes_still_follows_every_clear(
    cache: TieredCache, settings: object, config: CacheConfig, redis_client: redis.Redis
) -> None:
    """A process whose L1 holds only what writes never make stale (the models' predictions) is
    not woken by each write's keys and tags, but a clear still reaches it: its L1 is dropped and it
    reads and writes Redis in the new epoch. Its own writes reach the others as anyone's do."""
    client = redis.Redis.from_url(settings.redis_url)  # type: ignore[attr-defined]
    received = sample("sophia_cache_invalidations_total", origin="remote")
    async with TieredCache(client, config, name="models-only", hears_writes=False) as predictions:
        loader = CountingLoader(b"vector")
        await predictions.get_or_load("embedding:abc", loader)
        await cache.get_or_load("record:1", CountingLoader())
        await cache.invalidate(keys=["embedding:abc"], tags=["records"])
        await predictions.invalidate(keys=["record:1"])
        await eventually(lambda: "record:1" not in cache.l1)  # it told the other process
        assert "embedding:abc" in predictions.l1
        await cache.clear()
        await eventually(lambda: predictions.l2.epoch == cache.l2.epoch == 1)
        assert len(predictions.l1) == 0
        # heard: the other process, its write; this one, the clear alone (a write it heard would
        # have reached it before the clear, published later to the same connection)
        assert sample("sophia_cache_invalidations_total", origin="remote") == received + 2
        assert (await predictions.get_or_load("embedding:abc", loader)).value == b"vector"
        assert loader.calls == 2  # loaded again, in the new epoch
        assert await redis_client.exists(cache.l2.value_key("embedding:abc")) == 1
    await client.aclose()


async def test_a_load_begun_before_a_clear_is_not_stored_in_the_new_epoch(
    cache: TieredCache, redis_client: redis.Redis
) -> None:
    loader = GatedLoader(b"read before the clear")
    pending = asyncio.create_task(cache.get_or_load("key", loader))
    await loader.started.wait()
    await cache.clear()
    loader.release.set()
    await pending
    assert "key" not in cache.l1
    assert await redis_client.exists(cache.l2.value_key("key")) == 0


async def test_a_process_starting_after_a_clear_reads_the_current_epoch(
    cache: TieredCache, settings: object, config: CacheConfig
) -> None:
    await cache.clear()
    await cache.clear()
    client = redis.Redis.from_url(settings.redis_url)  # type: ignore[attr-defined]
    async with TieredCache(client, config, name="late") as late:
        assert late.l2.epoch == 2
    await client.aclose()


async def test_the_epoch_never_goes_back_when_redis_comes_back_empty(
    cache: TieredCache, redis_client: redis.Redis
) -> None:
    await cache.clear()
    await cache.clear()
    await redis_client.delete(cache.l2.epoch_key)  # a Redis restarted without its data
    assert await cache.l2.load_epoch() == 2
    assert int(await redis_client.get(cache.l2.epoch_key)) == 2  # put back for late starters
    await redis_client.delete(cache.l2.epoch_key)
    await cache.clear()
    assert cache.l2.epoch == 3


async def miss_an_invalidation(writer: TieredCache, reader: TieredCache, loader: CountingLoader) -> None:
    """Both caches hold "k"; the writer, cut off from Redis (its breaker open), invalidates it: its
    own L1 drops it, the reader never hears, and the writer remembers it missed one."""
    await writer.get_or_load("k", loader)
    await reader.get_or_load("k", loader)
    while writer.l2.breaker.state is not BreakerState.OPEN:
        writer.l2.breaker.record(False)
    await writer.invalidate(keys=["k"])
    assert "k" not in writer.l1
    assert writer._missed
    assert "k" in reader.l1  # the message could not be sent


async def test_an_invalidation_that_missed_redis_becomes_a_clear_once_redis_answers(
    redis_client: redis.Redis, settings: object, config: CacheConfig
) -> None:
    other_client = redis.Redis.from_url(settings.redis_url)  # type: ignore[attr-defined]
    loader = CountingLoader(b"old")
    async with (
        TieredCache(redis_client, config, name="writer") as writer,
        TieredCache(other_client, config, name="reader") as reader,
    ):
        await miss_an_invalidation(writer, reader, loader)
        await writer.invalidate(keys=["unrelated"])  # still cut off (open for 1 s): still owed
        assert writer._missed
        assert "k" in reader.l1
        # Redis is back: the next call may go through (no waiting out the second)
        writer.l2.breaker.open_s = 0

        async def retried() -> bool:
            await writer.invalidate(keys=["unrelated"])
            return not writer._missed

        await eventually(retried, timeout_s=2, poll_s=0.01)  # the deferred invalidation goes out
        await eventually(lambda: "k" not in reader.l1)
        assert reader.l2.epoch == writer.l2.epoch == 1
        loader.value = b"new"
        assert (await reader.get_or_load("k", loader)).value == b"new"
    await other_client.aclose()


async def test_a_value_past_freshness_in_redis_is_served_stale_when_the_loader_fails(
    cache: TieredCache, other_process: TieredCache
) -> None:
    from sophia.cache.entry import encode, make_entry

    now = time.monotonic()
    expired = make_entry(b"kept in redis", TtlClass(fresh_s=0, stale_if_error_s=300), now - 1)
    assert await other_process.l2.set("key", encode(expired, now), 300, ()) is True
    loader = CountingLoader()
    loader.error = ConnectionError("postgres is down")
    result = await cache.get_or_load("key", loader)
    assert (result.value, result.stale_reason) == (b"kept in redis", "error")
    assert loader.calls == 1


async def test_a_miss_waits_no_longer_than_the_lock_for_another_process_then_loads_itself(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    from dataclasses import replace

    timeouts = sample("sophia_cache_lock_waits_total", outcome="timeout")
    async with TieredCache(redis_client, replace(config, lock_s=0.05)) as cache:
        await cache.l2.get_or_claim("stuck", "a-process-that-hangs", 5.0)  # claims for 5 s, stores nothing
        loader = CountingLoader(b"loaded after the wait")
        started = time.perf_counter()
        result = await cache.get_or_load("stuck", loader)
    assert result.value == b"loaded after the wait"
    assert loader.calls == 1
    assert time.perf_counter() - started < 1
    assert sample("sophia_cache_lock_waits_total", outcome="timeout") - timeouts == 1


async def test_a_load_redis_refuses_after_an_unannounced_invalidation_is_not_kept_in_l1(
    cache: TieredCache, other_process: TieredCache, redis_client: redis.Redis
) -> None:
    loader = GatedLoader(b"read before the invalidation")
    pending = asyncio.create_task(cache.get_or_load("key", loader))
    await loader.started.wait()
    assert await other_process.l2.delete(["key"], []) is True  # Redis only: no message reaches `cache`
    loader.release.set()
    assert (await pending).value == b"read before the invalidation"
    assert "key" not in cache.l1
    assert await redis_client.exists(cache.l2.value_key("key")) == 0


async def test_a_missed_invalidation_is_sent_as_a_clear_when_the_subscription_comes_back(
    settings: object, config: CacheConfig
) -> None:
    name = f"writer-{uuid.uuid4().hex}"
    writer_client = redis.Redis.from_url(settings.redis_url, client_name=name)  # type: ignore[attr-defined]
    reader_client = redis.Redis.from_url(settings.redis_url)  # type: ignore[attr-defined]
    loader = CountingLoader(b"old")
    try:
        async with (
            TieredCache(writer_client, config, name="writer") as writer,
            TieredCache(reader_client, config, name="reader") as reader,
        ):
            await miss_an_invalidation(writer, reader, loader)
            writer.l2.breaker.open_s = 0  # Redis is back: the next call may go through

            # The writer's subscription dropped meanwhile: resubscribing, it sends what it missed.
            clients = await reader_client.client_list()
            subscriber = next(c for c in clients if c["name"] == name and int(c["sub"]) > 0)
            await reader_client.client_kill_filter(_id=subscriber["id"])

            await eventually(lambda: not writer._missed and "k" not in reader.l1, timeout_s=3)
            assert reader.l2.epoch == writer.l2.epoch == 1
    finally:
        await writer_client.aclose()
        await reader_client.aclose()


@contextlib.asynccontextmanager
async def redis_user(admin: redis.Redis, denied: str) -> AsyncIterator[tuple[redis.Redis, str]]:
    """A client of a Redis user of its own that may do everything but `denied` (an ACL rule such
    as `-@scripting`), and the user's name, removed after."""
    user, password = f"test-{uuid.uuid4().hex}", uuid.uuid4().hex
    await admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all", denied]
    )
    where = admin.connection_pool.connection_kwargs
    client = redis.Redis(
        host=where["host"],
        port=where["port"],
        username=user,
        password=password,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )
    try:
        yield client, user
    finally:
        await client.aclose()
        await admin.acl_deluser(user)


async def test_a_subscription_without_the_epoch_keeps_the_gap_open_and_l1_serving(
    config: CacheConfig, redis_client: redis.Redis, logs_of
) -> None:
    """A Redis user that may subscribe but not run scripts: the epoch cannot be read, so the cache
    does not claim to listen (whatever it missed is unknown) and keeps serving from L1; once the
    epoch can be read it listens again and drops L1, the gap being over."""
    loader = CountingLoader()
    async with redis_user(redis_client, "-@scripting") as (limited, user):
        quick = replace(config, breaker_open_s=0.05, reconnect_max_s=0.05)
        listener_log = logs_of(invalidation_module)
        async with TieredCache(limited, quick) as cache:
            assert not cache.listening
            for attempts in (1, 2, 3):  # each read after one more failed resubscription
                await eventually(lambda: listener_log.count("cache_listener_disconnected") >= attempts)  # noqa: B023
                assert (await cache.get_or_load("kept", loader)).value == b"value"
            assert not cache.listening
            assert loader.calls == 1

            await redis_client.acl_setuser(user, enabled=True, commands=["+@scripting"])
            await eventually(lambda: cache.listening, timeout_s=5)
            await cache.get_or_load("kept", loader)
            assert loader.calls == 2


async def test_a_resubscription_whose_owed_clear_cannot_be_sent_keeps_the_gap_open(
    config: CacheConfig, redis_client: redis.Redis, logs_of
) -> None:
    """An invalidation that missed Redis is owed to the other processes as a clear when the
    subscription comes back; while that clear cannot be sent (a user that may not publish), the
    cache does not claim to listen, and it does once the clear went out."""
    async with redis_user(redis_client, "-publish") as (limited, user):
        quick = replace(config, breaker_open_s=0.05, reconnect_max_s=0.05)
        async with TieredCache(limited, quick) as cache:
            assert cache.listening
            await cache.invalidate(keys=["k"])  # its script publishes: refused, so owed as a clear
            await redis_client.client_kill_filter(_type="pubsub", user=user)  # a gap
            await eventually(lambda: not cache.listening, timeout_s=5)
            listener_log = logs_of(invalidation_module)
            # past several resubscriptions: each still owes the clear
            await eventually(lambda: listener_log.count("cache_listener_disconnected") >= 3, timeout_s=5)
            assert not cache.listening

            await redis_client.acl_setuser(user, enabled=True, commands=["+publish"])
            await eventually(lambda: cache.listening, timeout_s=5)
