"""Cross-process stampede protection: a cold key wanted at once by several processes.

    uv run python bench/stampede.py [--processes 4] [--concurrent 250] [--keys 20] [--query-ms 20] [--json]

Side A runs with the Redis loading lock (`SOPHIA_CACHE_LOCK_S`, the default), side B without it
(each process single-flights on its own). Each "process" is a `TieredCache` with its own Redis
connection, as an API worker holds; they share one event loop here, which changes nothing about
who calls the loader. For every cold key, each process fires `--concurrent` lookups at once; the
loader stands for a query of `--query-ms`. Printed: loader calls per cold key on each side (the
point: 1 against one per process), the latency of those cold lookups (the waiters poll Redis, so
theirs is the query plus up to one poll step), and the lock's cost on an uncontended miss
(sequential misses on distinct keys in one process, lock against none).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import harness
import redis.asyncio as redis

from sophia.cache import CacheConfig, TieredCache

HEADLINE = harness.Headline(
    anchor="no lock: single-flight in each process only",
    subject="the Redis loading lock (the default)",
    a=harness.Figure("unlocked.loader_calls_per_key", "loader calls/key"),
    b=harness.Figure("locked.loader_calls_per_key", "loader calls/key"),
    ratio="loader_calls_ratio",
    ratio_label="A/B",
    goals=(harness.Goal("1 loader call a cold key", path="locked.loader_calls_per_key", at_most=1.0),),
    section="Stampede protection",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="caches with their own Redis connection")
    parser.add_argument("--concurrent", type=int, default=250, help="lookups of one key per process at once")
    parser.add_argument("--keys", type=int, default=20, help="cold keys, one after another")
    parser.add_argument("--query-ms", type=float, default=20.0, help="how long the loader takes")
    parser.add_argument("--misses", type=int, default=2000, help="sequential misses timing the lock's cost")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.processes, options.concurrent, options.keys, options.misses) < 1 or options.query_ms < 0:
        parser.error("counts must be >= 1 and --query-ms >= 0")
    return options


async def cold_keys(redis_url: str, options: argparse.Namespace, lock_s: float) -> dict[str, Any]:
    """Every process wants each cold key at once; loader calls and lookup latencies."""
    config = CacheConfig(key_prefix=f"bench:stampede:{uuid.uuid4().hex}:", lock_s=lock_s)
    calls = 0

    async def loader() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(options.query_ms / 1000)
        return b"x" * 1024

    clients = [redis.Redis.from_url(redis_url) for _ in range(options.processes)]
    caches = [TieredCache(client, replace(config), name=f"process-{n}") for n, client in enumerate(clients)]
    latencies: list[float] = []

    async def lookup(cache: TieredCache, key: str) -> None:
        started = time.perf_counter()
        await cache.get_or_load(key, loader)
        latencies.append(time.perf_counter() - started)

    try:
        for cache in caches:
            await cache.__aenter__()
        for number in range(options.keys):
            key = f"cold:{number}"
            await asyncio.gather(*(lookup(cache, key) for cache in caches for _ in range(options.concurrent)))
    finally:
        for cache in caches:
            await cache.__aexit__(None, None, None)
        for client in clients:
            await client.aclose()
    latencies.sort()
    return {
        "lock_s": lock_s,
        "loader_calls": calls,
        "loader_calls_per_key": calls / options.keys,
        "lookups": len(latencies),
        "p50_ms": harness.percentile(latencies, 0.50) * 1000,
        "p99_ms": harness.percentile(latencies, 0.99) * 1000,
    }


async def miss_cost(redis_url: str, misses: int, lock_s: float) -> float:
    """Mean milliseconds of a miss with an instant loader: the cache's own work on a miss."""
    client = redis.Redis.from_url(redis_url)
    config = CacheConfig(key_prefix=f"bench:stampede:{uuid.uuid4().hex}:", lock_s=lock_s)

    async def loader() -> bytes:
        return b"x" * 1024

    try:
        async with TieredCache(client, config, name="cost") as cache:
            started = time.perf_counter()
            for number in range(misses):
                await cache.get_or_load(f"miss:{number}", loader)
            return (time.perf_counter() - started) / misses * 1000
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    lock_s = CacheConfig().lock_s
    with harness.environment() as env:
        locked = harness.run_async(cold_keys(env.redis_url, options, lock_s))
        unlocked = harness.run_async(cold_keys(env.redis_url, options, 0.0))
        cost_locked = harness.run_async(miss_cost(env.redis_url, options.misses, lock_s))
        cost_unlocked = harness.run_async(miss_cost(env.redis_url, options.misses, 0.0))
        result = {
            "benchmark": "stampede",
            "processes": options.processes,
            "concurrent": options.concurrent,
            "keys": options.keys,
            "query_ms": options.query_ms,
            "locked": locked,
            "unlocked": unlocked,
            "loader_calls_ratio": unlocked["loader_calls"] / max(1, locked["loader_calls"]),
            "miss_ms_locked": cost_locked,
            "miss_ms_unlocked": cost_unlocked,
            "machine": harness.machine(env),
        }
    text = "\n".join(
        [
            f"{options.processes} processes x {options.concurrent} concurrent lookups of each of "
            f"{options.keys} cold keys, loader {options.query_ms:g} ms",
            f"  with the Redis lock : {locked['loader_calls_per_key']:.2f} loader calls per key, "
            f"p50 {locked['p50_ms']:.1f} ms, p99 {locked['p99_ms']:.1f} ms",
            f"  without             : {unlocked['loader_calls_per_key']:.2f} loader calls per key, "
            f"p50 {unlocked['p50_ms']:.1f} ms, p99 {unlocked['p99_ms']:.1f} ms",
            f"  ratio: {result['loader_calls_ratio']:.1f}x fewer loader calls with the lock",
            f"  an uncontended miss costs {cost_locked:.3f} ms with the lock, {cost_unlocked:.3f} ms without",
        ]
    )
    harness.emit(result, text, options, HEADLINE)
    return result


if __name__ == "__main__":
    main()
