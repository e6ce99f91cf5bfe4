from sophia.cache import Entry, MemoryCache

from .conftest import Clock


def entry(value: bytes, lifetime_s: float = 10.0, tags: tuple[str, ...] = (), now: float = 1_000.0) -> Entry:
    return Entry(value, "etag", now + lifetime_s, now + lifetime_s, now + lifetime_s, tags)


def test_get_returns_what_was_set_until_it_expires(clock: Clock) -> None:
    cache = MemoryCache(1_000, clock)
    cache.set("a", entry(b"one", lifetime_s=5))
    assert cache.get("a") is not None
    clock.now += 4.9
    assert cache.get("a") is not None
    clock.now += 0.2
    assert cache.get("a") is None
    assert len(cache) == 0
    assert cache.bytes == 0


def test_set_evicts_least_recently_used_until_the_bytes_fit(clock: Clock) -> None:
    unit = MemoryCache.size_of("a", entry(b"123456789"))
    cache = MemoryCache(3 * unit, clock)
    for key in ("a", "b", "c"):
        cache.set(key, entry(b"123456789"))
    assert cache.get("a") is not None  # now "b" is the least recently used
    evicted = cache.set("d", entry(b"123456789"))
    assert evicted == 1
    assert "b" not in cache
    assert all(key in cache for key in ("a", "c", "d"))
    assert cache.bytes == 3 * unit
    assert cache.evictions == 1


def test_one_large_value_evicts_several_and_an_oversized_one_is_not_stored(clock: Clock) -> None:
    unit = MemoryCache.size_of("a", entry(b"123456789"))
    cache = MemoryCache(3 * unit, clock)
    for key in ("a", "b", "c"):
        cache.set(key, entry(b"123456789"))
    big = entry(b"x" * 20)  # worth a little more than one of the others
    assert cache.set("big", big) == 2
    assert cache.bytes == MemoryCache.size_of("big", big) + unit
    assert "c" in cache
    assert "big" in cache
    assert cache.set("huge", entry(b"x" * 3 * unit)) == 0
    assert "huge" not in cache


def test_replacing_a_key_counts_its_bytes_once(clock: Clock) -> None:
    cache = MemoryCache(10_000, clock)
    cache.set("a", entry(b"12345"))
    cache.set("a", entry(b"123"))
    assert cache.bytes == MemoryCache.size_of("a", entry(b"123"))
    assert len(cache) == 1


def test_delete_by_tag_drops_every_tagged_entry_and_only_those(clock: Clock) -> None:
    cache = MemoryCache(10_000, clock)
    cache.set("record:1", entry(b"1", tags=("record:1", "list")))
    cache.set("record:2", entry(b"2", tags=("record:2", "list")))
    cache.set("other", entry(b"3", tags=("other",)))
    assert cache.delete_by_tag("list") == 2
    assert "record:1" not in cache
    assert "record:2" not in cache
    assert cache.get("other") is not None
    assert cache.tags() == {"other"}


def test_the_tag_index_is_cleaned_on_eviction_expiry_and_delete(clock: Clock) -> None:
    cache = MemoryCache(MemoryCache.size_of("a", entry(b"1234567890", tags=("t1",))) + 10, clock)
    cache.set("a", entry(b"1234567890", tags=("t1",)))
    cache.set("b", entry(b"1234567890", tags=("t2",)))  # evicts "a"
    assert cache.tags() == {"t2"}
    clock.now += 11
    assert cache.get("b") is None
    assert cache.tags() == frozenset()
    cache.set("c", entry(b"1", tags=("t3",), now=clock.now))
    assert cache.delete("c")
    assert not cache.delete("c")
    assert cache.tags() == frozenset()
    assert cache.delete_by_tag("t3") == 0


def test_the_bytes_counted_are_what_the_entries_really_take_even_when_tiny():
    import tracemalloc

    cache = MemoryCache(max_bytes=10_000_000, clock=lambda: 0.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for number in range(2_000):
        tags = (f"list:src{number % 50}:deal", f"data:stage={number}", "records")
        key = f"records:list:{number}:{'x' * 20}"
        cache.set(key, Entry(b"{}", f"{number:016x}", 10.0, 10.0, 10.0, tags))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.7 * held <= cache.bytes <= 1.5 * held  # a 2-byte value's entry costs ~700 bytes, not 2
