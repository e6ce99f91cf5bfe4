"""Hit rates of the tiered cache under a Zipf load: which tier answers, against what theory allows.

    uv run python bench/hit_rate.py [--keys 100000] [--requests 300000] [--warmup 1000000] [--json]

Keys are drawn from Zipf(s) truncated to `--keys` (rank r with probability r^-s / sum of k^-s, by
inverse CDF), one lookup at a time, through a real `TieredCache` on the benchmark's Redis (keys under
a prefix of this run's own, deleted afterwards). L1 is sized in bytes to hold `--l1-share` of the
keys; Redis holds them all. The loader returns `--value-bytes` bytes and counts its calls. Values
stay fresh for the whole run: this measures capacity, not expiry. The first `--warmup` lookups are
reported apart from the measured ones.

Anchors for judging the figures, from the same distribution: the L1 hit rate of an ideal cache of
that size (the most probable keys, held for ever), LRU's (Che's approximation), and the combined
rate a cache with an unbounded second tier reaches: all but each key's first request.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

import harness
import numpy as np

from sophia.cache import CacheConfig, MemoryCache, RedisConnection, TieredCache
from sophia.cache.entry import make_entry

GOAL = 0.95
FRESH_S = 86_400.0
"""Longer than any run: nothing expires, so every miss is one of capacity or a first request."""
DELETE_BATCH = 1_000


HEADLINE = harness.Headline(
    anchor="the bound: a miss only on each key's first request",
    subject="`TieredCache` (L1 + Valkey), Zipf lookups",
    a=harness.Figure("anchors.best_combined_hit_rate", "% hits", scale=100),
    b=harness.Figure("measured.hit_rate", "% hits", scale=100),
    ratio=None,
    goals=(harness.Goal(f"combined ≥ {GOAL:.0%}", path="measured.hit_rate", at_least=GOAL),),
    section="Hit rates",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys the load draws from")
    parser.add_argument("--requests", type=int, default=300_000, help="lookups measured")
    parser.add_argument(
        "--warmup", type=int, default=1_000_000, help="lookups before measuring (the steady state)"
    )
    parser.add_argument("--exponent", type=float, default=1.1, help="Zipf's s")
    parser.add_argument("--l1-share", type=float, default=0.1, help="share of the keys L1 holds")
    parser.add_argument("--value-bytes", type=int, default=1_024, help="size of every value")
    parser.add_argument("--seed", type=int, default=7, help="of the random draws")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.keys, options.requests, options.value_bytes) < 1 or options.warmup < 0:
        parser.error("--keys, --requests and --value-bytes must be >= 1, --warmup >= 0")
    if not 0 < options.l1_share <= 1 or options.exponent <= 0:
        parser.error("--l1-share must be in (0, 1], --exponent > 0")
    return options


def zipf_probabilities(keys: int, exponent: float) -> np.ndarray:
    """P(rank r) for r = 1..keys: most probable first."""
    weights: np.ndarray = np.arange(1, keys + 1, dtype=np.float64) ** -exponent
    weights /= weights.sum()
    return weights


def draw_ranks(probabilities: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` 0-based ranks by inverse CDF (numpy's own zipf has no upper bound)."""
    cdf = np.cumsum(probabilities)
    cdf /= cdf[-1]
    uniform = np.random.default_rng(seed).random(count)
    return np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)


def anchors(probabilities: np.ndarray, capacity: int, warmup: int, requests: int) -> dict[str, float]:
    """What theory allows: an ideal and an LRU L1 of `capacity` keys, and first requests in the window."""
    lower, upper = 1.0, 1e15  # Che: the characteristic time T at which LRU holds `capacity` keys
    for _ in range(200):
        middle = (lower * upper) ** 0.5
        held = float(np.sum(-np.expm1(-probabilities * middle)))
        lower, upper = (middle, upper) if held < capacity else (lower, middle)
    lru = float(np.sum(probabilities * -np.expm1(-probabilities * lower)))
    never_before = np.exp(warmup * np.log1p(-probabilities))  # P(not drawn during the warm-up)
    first_requests = float(np.sum(never_before - np.exp((warmup + requests) * np.log1p(-probabilities))))
    return {
        "ideal_l1_hit_rate": round(float(np.sum(probabilities[:capacity])), 4),
        "lru_l1_hit_rate": round(lru, 4),
        "expected_first_requests": round(first_requests),
        "best_combined_hit_rate": round(1 - first_requests / requests, 4),
    }


@dataclass
class Tally:
    """Which tier answered each lookup of one window."""

    l1: int = 0
    l2: int = 0
    loads: int = 0
    seconds: float = 0.0

    @property
    def lookups(self) -> int:
        return self.l1 + self.l2 + self.loads

    def as_dict(self) -> dict[str, Any]:
        lookups = self.lookups or 1
        return {
            "lookups": self.lookups,
            "l1_hits": self.l1,
            "l2_hits": self.l2,
            "loads": self.loads,
            "l1_hit_rate": round(self.l1 / lookups, 5),
            "l2_hit_rate": round(self.l2 / lookups, 5),
            "load_rate": round(self.loads / lookups, 5),
            "hit_rate": round((self.l1 + self.l2) / lookups, 5),
            "seconds": round(self.seconds, 3),
            "per_s": round(self.lookups / self.seconds, 1) if self.seconds > 0 else 0.0,
        }


async def replay(cache: TieredCache, keys: list[str], value: bytes) -> Tally:
    """Look up `keys` in order, one at a time, and tally which tier answered each."""
    tally = Tally()

    async def load() -> bytes:
        tally.loads += 1
        return value

    started = time.perf_counter()
    for key in keys:
        in_l1 = key in cache.l1  # a peek: it does not touch the LRU order
        loads = tally.loads
        await cache.get_or_load(key, load, ttl_s=FRESH_S)
        if in_l1:
            tally.l1 += 1
        elif tally.loads == loads:
            tally.l2 += 1
    tally.seconds = time.perf_counter() - started
    return tally


def entry_bytes(key: str, value: bytes) -> int:
    """What one entry counts against L1's `max_bytes` (measured, not restated)."""
    probe = MemoryCache(max_bytes=1 << 40)
    probe.set(key, make_entry(value, CacheConfig().ttl_class("api"), time.monotonic()))
    return int(probe.bytes)


async def measure(
    redis_url: str, names: list[str], ranks: np.ndarray, options: argparse.Namespace
) -> dict[str, Any]:
    value = b"v" * options.value_bytes
    capacity = max(1, round(options.keys * options.l1_share))
    config = CacheConfig(
        l1_max_bytes=entry_bytes(names[0], value) * capacity,
        key_prefix=f"sophia:bench:hit_rate:{os.getpid()}:{time.monotonic_ns()}:",
    )
    keys = [names[rank] for rank in ranks.tolist()]
    async with RedisConnection(redis_url) as redis:
        try:
            async with TieredCache(redis.client, config, name="hit_rate") as cache:
                warmup = await replay(cache, keys[: options.warmup], value)
                measured = await replay(cache, keys[options.warmup :], value)
                held = len(cache.l1)
        finally:
            batch = []
            async for stored_key in redis.client.scan_iter(match=f"{config.key_prefix}*", count=DELETE_BATCH):
                batch.append(stored_key)
                if len(batch) == DELETE_BATCH:
                    await redis.client.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.client.unlink(*batch)
    return {
        "l1_capacity": capacity,
        "l1_max_bytes": config.l1_max_bytes,
        "l1_held_at_end": held,
        "warmup": warmup.as_dict(),
        "measured": measured.as_dict(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    probabilities = zipf_probabilities(options.keys, options.exponent)
    ranks = draw_ranks(probabilities, options.warmup + options.requests, options.seed)
    width = len(str(options.keys - 1))
    names = [f"zipf:{rank:0{width}d}" for rank in range(options.keys)]  # one length: one entry size
    with harness.environment() as env:
        figures = harness.run_async(measure(env.redis_url, names, ranks, options))
        info = harness.machine(env)
    capacity = figures["l1_capacity"]
    result = {
        "benchmark": "hit_rate",
        "keys": options.keys,
        "requests": options.requests,
        "warmup_requests": options.warmup,
        "exponent": options.exponent,
        "value_bytes": options.value_bytes,
        "seed": options.seed,
        **figures,
        "anchors": anchors(probabilities, capacity, options.warmup, options.requests),
        "goal": GOAL,
        "machine": info,
    }
    measured, warmup, theory = result["measured"], result["warmup"], result["anchors"]
    text = "\n".join(
        (
            f"Zipf(s={options.exponent:g}) over {options.keys:,} keys of {options.value_bytes:,} bytes, "
            f"L1 holding {capacity:,} ({options.l1_share:.0%} of them), "
            f"{options.requests:,} lookups measured after {options.warmup:,}",
            tier_line("measured", measured),
            tier_line("warm-up", warmup),
            f"  combined {measured['hit_rate']:.2%} (goal >= {GOAL:.0%}); theory: ideal L1 "
            f"{theory['ideal_l1_hit_rate']:.2%}, LRU L1 {theory['lru_l1_hit_rate']:.2%}, best combined "
            f"{theory['best_combined_hit_rate']:.2%} (~{theory['expected_first_requests']:,} first requests)",
        )
    )
    harness.emit(result, text, options, HEADLINE)
    return result


def tier_line(label: str, tally: dict[str, Any]) -> str:
    return (
        f"  {label:<9} L1 {tally['l1_hit_rate']:7.2%}  L2 {tally['l2_hit_rate']:7.2%}  "
        f"loader {tally['load_rate']:7.2%}  combined {tally['hit_rate']:7.2%}  "
        f"({tally['lookups']:,} lookups, {tally['per_s']:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
