"""The cache's Prometheus metrics (its own, so they live with it; `/metrics` exposes them with the rest)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_HITS = Counter("sophia_cache_hits_total", "Lookups answered by a tier", ["tier"])
CACHE_MISSES = Counter("sophia_cache_misses_total", "Lookups a tier could not answer", ["tier"])
CACHE_EVICTIONS = Counter("sophia_cache_evictions_total", "L1 entries evicted to make room")
CACHE_L1_BYTES = Gauge(
    "sophia_cache_l1_bytes", "Bytes held by L1 caches", ["cache"], multiprocess_mode="livesum"
)
CACHE_LOAD_SECONDS = Histogram(
    "sophia_cache_load_duration_seconds",
    "Time the loader took on a miss, by outcome",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_STALE_SERVES = Counter(
    "sophia_cache_stale_serves_total", "Stale values served on purpose, by reason", ["reason"]
)
CACHE_REDIS_FAILURES = Counter(
    "sophia_cache_redis_failures_total",
    "Redis calls skipped or failed (the cache went on without L2)",
    ["operation"],
)
CACHE_REDIS_BUSY = Counter(
    "sophia_cache_redis_busy_total",
    "Redis calls skipped because this process's calls in flight stayed at their limit past the timeout",
    ["operation"],
)
CACHE_LOCK_WAITS = Counter(
    "sophia_cache_lock_waits_total",
    "Misses that waited for another process's loader, by outcome (value, released, timeout)",
    ["outcome"],
)
CACHE_INVALIDATIONS = Counter(
    "sophia_cache_invalidations_total", "Invalidation messages applied, by origin", ["origin"]
)
