"""L1: an in-process LRU of bytes, bounded by total size and per-entry lifetime.

Why our own and not cashews/aiocache: neither bounds memory by the bytes held, keeps a tag index
that shrinks on eviction, or lets pub/sub messages drop entries by tag, and both put async
wrappers and pickling on a path that here is one dict lookup. See docs/decisions/0003-cache-core.md.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable

from sophia.cache.entry import Entry

LRU_SLOT_BYTES = 104
"""An OrderedDict slot (hash table entry and linked-list node), measured on CPython 3.11."""
INDEX_SLOT_BYTES = 72
"""A key's slot in one tag's set of the index, with the set's own share."""


class MemoryCache:
    """LRU by size: `get` is O(1); `set` evicts the least recently used until the bytes fit.

    An entry is dropped once the clock passes its `stale_until`; the caller decides what fresh
    and stale mean. Not thread-safe and not async: one per event loop.
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._keys_by_tag: dict[str, set[str]] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Entry | None:
        """The entry for `key` (now the most recently used), or None if absent or past `stale_until`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.stale_until:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def set(self, key: str, entry: Entry) -> int:
        """Store `entry` (replacing any), evict by LRU until it fits; returns how many were evicted.

        A value larger than `max_bytes` is not stored at all.
        """
        self._remove(key)
        size = self.size_of(key, entry)
        if size > self.max_bytes:
            return 0
        evicted = 0
        while self.bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            evicted += 1
        self._entries[key] = entry
        self.bytes += size
        for tag in entry.tags:
            self._keys_by_tag.setdefault(tag, set()).add(key)
        self.evictions += evicted
        return evicted

    def delete(self, key: str) -> bool:
        return self._remove(key)

    def delete_by_tag(self, tag: str) -> int:
        """Drop every entry carrying `tag`; returns how many."""
        keys = self._keys_by_tag.pop(tag, set())
        for key in keys:
            self._remove(key)
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._keys_by_tag.clear()
        self.bytes = 0

    def tags(self) -> frozenset[str]:
        """The tags some entry still carries (the index never outlives its entries)."""
        return frozenset(self._keys_by_tag)

    @staticmethod
    def size_of(key: str, entry: Entry) -> int:
        """What the entry really costs the process: its objects (key, value, etag, the entry, its
        tags) and its slots in the LRU and the tag index, not only the value's bytes: a flood of
        tiny entries under many tags (random list filters) is bounded as a few big ones are."""
        tags = sum(sys.getsizeof(tag) + INDEX_SLOT_BYTES for tag in entry.tags)
        objects = sys.getsizeof(key) + sys.getsizeof(entry.value) + sys.getsizeof(entry.etag)
        return objects + sys.getsizeof(entry) + sys.getsizeof(entry.tags) + tags + LRU_SLOT_BYTES

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= self.size_of(key, entry)
        for tag in entry.tags:
            keys = self._keys_by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_tag[tag]
        return True
