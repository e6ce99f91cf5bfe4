"""Sophia cache: the Redis connection and the tiered cache (L1 in process, L2 Redis, then the loader)."""

from sophia.cache.connection import RedisConnection
from sophia.cache.entry import Entry, Loaded
from sophia.cache.l1 import MemoryCache
from sophia.cache.tiered import CacheResult, Loader, TieredCache
from sophia.cache.ttl import CacheConfig, TtlClass, default_ttl_classes

__all__ = [
    "CacheConfig",
    "CacheResult",
    "Entry",
    "Loaded",
    "Loader",
    "MemoryCache",
    "RedisConnection",
    "TieredCache",
    "TtlClass",
    "default_ttl_classes",
]
