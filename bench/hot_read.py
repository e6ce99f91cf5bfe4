"""Cache hits: a bare ASGI app sending a record's bytes (A) against cached `GET /api/v1/records/{id}` (B).

    uv run python bench/hot_read.py [--records 1000] [--duration 10] [--connections 32] [--rate 5000] [--json]

B is the real server with the cache on (the default), warmed first so that every request is an L1
hit. A is bench/bare_app.py under granian with the same
options (workers, uvloop, backlog, no access log), answering each id with the body and headers the
API answered for it. Both take the same wrk load (`apt-get install -y wrk`) with the same Lua script,
in interleaved rounds. B/A is what the API's own path costs on a hit.

Then each side at a fixed rate (`--rate` a second, open loop: k6's constant-arrival-rate), B for
its latency when not saturated, A as the control: what k6, on the same cores, leaves of the floor.
And, in process, one `TieredCache.get_or_load` answered by L1.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bare_app
import harness
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from sophia.cache import CacheConfig, TieredCache

GOAL = 0.45
GOAL_API_PER_S = 10_000
GOAL_P99_MS = 20.0
L1_SAMPLES = {"sophia_cache_hits_total": "hits", "sophia_cache_misses_total": "misses"}
SERVER_HEADERS = {"date", "server"}
"""Added by granian to every response on both sides, so not stored with the bare app's responses."""
IN_PROCESS_HITS = 200_000


HEADLINE = harness.Headline(
    anchor="bare ASGI app (`bench/bare_app.py`), granian ×2",
    subject="`GET /api/v1/records/{id}`, cache on (L1 hits)",
    a=harness.Figure("raw.per_s", "req/s"),
    b=harness.Figure("api.per_s", "req/s"),
    goals=(
        harness.Goal(f"B/A ≥ {GOAL}", at_least=GOAL),
        harness.Goal(f"B ≥ {GOAL_API_PER_S:,} req/s", path="api.per_s", at_least=GOAL_API_PER_S),
        harness.Goal(
            f"B p99 ≤ {GOAL_P99_MS:g} ms at a fixed rate", path="fixed_rate.api.p99_ms", at_most=GOAL_P99_MS
        ),
    ),
    section="Hot reads",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000, help="records seeded, all of them hot")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per side")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=harness.DEFAULT_WORKERS, help="processes a side")
    parser.add_argument("--rate", type=int, default=5_000, help="requests a second of the fixed-rate run")
    parser.add_argument("--rate-duration", type=float, default=10.0, help="seconds of the fixed-rate run")
    parser.add_argument("--rate-vus", type=int, help="k6 virtual users (connections); default rate / 100")
    parser.add_argument(
        "--plain-anchor",
        action="store_true",
        help="A sends each record's bytes with only Content-Type and Content-Length (the plainest app)",
    )
    harness.add_common_arguments(parser)
    options = parser.parse_args(argv)
    harness.wrk_binary()  # fail before starting anything when the load generator is missing
    if min(options.records, options.connections, options.rounds, options.rate) < 1:
        parser.error("--records, --connections, --rounds and --rate must be >= 1")
    if options.duration <= 0 or options.rate_duration <= 0:
        parser.error("--duration and --rate-duration must be > 0")
    if options.rate_vus is not None and options.rate_vus < 1:
        parser.error("--rate-vus must be >= 1")
    return options


def record_responses(server: harness.ApiServer, ids: list[str]) -> dict[str, Any]:
    """Each id's response from the API (which also loads it into the cache), for the bare app."""
    responses = {}
    headers = {"Authorization": f"Bearer {server.env.admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        for record_id in ids:
            response = client.get(f"/api/v1/records/{record_id}")
            response.raise_for_status()
            responses[record_id] = {
                "body": response.text,
                "headers": [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in response.headers.raw
                    if name.lower().decode("latin-1") not in SERVER_HEADERS
                ],
            }
    return responses


def plain(response: dict[str, Any]) -> dict[str, Any]:
    """The same body with the two headers any server of JSON sends, none of the API's own (ETag,
    Cache-Control, X-Request-ID): `--plain-anchor`'s floor."""
    kept = {"content-type", "content-length"}
    return {**response, "headers": [header for header in response["headers"] if header[0].lower() in kept]}


def l1_lookups(server: harness.ApiServer) -> dict[str, float]:
    """L1 hits and misses counted so far, summed over the API's workers (from /metrics)."""
    counts = {"hits": 0.0, "misses": 0.0}
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).raise_for_status().text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in L1_SAMPLES and sample.labels.get("tier") == "l1":
                counts[L1_SAMPLES[sample.name]] += sample.value
    return counts


async def l1_hit_seconds(value: bytes, lookups: int) -> float:
    """Seconds per `get_or_load` answered by L1, in process (no Redis, no HTTP)."""

    async def load() -> bytes:
        return value

    async with TieredCache(None, CacheConfig(), name="bench") as cache:
        await cache.get_or_load("record:bench", load)
        started = time.perf_counter()
        for _ in range(lookups):
            await cache.get_or_load("record:bench", load)
        return (time.perf_counter() - started) / lookups


@dataclass(frozen=True)
class Sides:
    """Everything measured over HTTP: the wrk rounds of both sides, then both at a fixed rate."""

    bare_rounds: list[harness.Measurement]
    api_rounds: list[harness.Measurement]
    l1_hit_share: float
    """Of B's lookups during its rounds, the share L1 answered (from the API's own counters)."""
    bare_fixed: harness.FixedRate
    api_fixed: harness.FixedRate
    record_bytes: bytes


def measure(env: harness.Environment, ids: list[str], options: argparse.Namespace) -> Sides:
    """Start B, warm it, start A with B's responses; interleaved wrk rounds, then k6 on each."""
    load = {"connections": options.connections, "threads": options.threads}
    fixed_load = {"rate": options.rate, "duration_s": options.rate_duration, "vus": options.rate_vus}
    with harness.ApiServer(env, workers=options.workers) as api:  # the cache on, as shipped
        if options.warmup > 0:  # fills L1 in every worker
            harness.wrk_records(api, ids, duration_s=options.warmup, **load)
        responses = record_responses(api, ids)
        if options.plain_anchor:
            responses = {record_id: plain(response) for record_id, response in responses.items()}
        responses_file = env.work_dir / "responses.json"
        responses_file.write_bytes(orjson.dumps(responses))
        bare = harness.ApiServer(
            env,
            workers=options.workers,
            command=[sys.executable, str(Path(bare_app.__file__).resolve())],
            extra_env={bare_app.RESPONSES_FILE_VARIABLE: str(responses_file)},
        )
        with bare:
            if options.warmup > 0:
                harness.wrk_records(bare, ids, duration_s=options.warmup, **load)
            bare_rounds, api_rounds = [], []
            hits = lookups = 0.0
            for _ in range(options.rounds):  # interleaved, so a noisy neighbour hits both sides alike
                harness.settle(options.settle)
                bare_rounds.append(harness.wrk_records(bare, ids, duration_s=options.duration, **load))
                harness.settle(options.settle)
                before = l1_lookups(api)
                api_rounds.append(harness.wrk_records(api, ids, duration_s=options.duration, **load))
                after = l1_lookups(api)
                hits += after["hits"] - before["hits"]
                lookups += after["hits"] - before["hits"] + after["misses"] - before["misses"]
            harness.settle(options.settle)
            bare_fixed = harness.k6_records(bare, ids, **fixed_load)
            harness.settle(options.settle)
            api_fixed = harness.k6_records(api, ids, **fixed_load)
    return Sides(
        bare_rounds,
        api_rounds,
        hits / lookups if lookups else 0.0,
        bare_fixed,
        api_fixed,
        responses[ids[0]]["body"].encode(),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        ids = harness.run_async(harness.seed(env.database_url, options.records))
        sides = measure(env, ids, options)
        result = {
            "benchmark": "hot_read",
            "records": options.records,
            "record_bytes": len(sides.record_bytes),
            "duration_s": options.duration,
            "connections": options.connections,
            "workers": options.workers,
            "wrk_threads": options.threads,
            "rounds": options.rounds,
            "plain_anchor": options.plain_anchor,
            **harness.comparison(sides.bare_rounds, sides.api_rounds, GOAL, env),
            "goal_api_per_s": GOAL_API_PER_S,
            "l1_hit_share": round(sides.l1_hit_share, 5),
            "fixed_rate": {
                "raw": sides.bare_fixed.as_dict(),
                "api": sides.api_fixed.as_dict(),
                "goal_p99_ms": GOAL_P99_MS,
                "k6": harness.k6_version(),
            },
        }
    l1_hit_us = harness.run_async(l1_hit_seconds(sides.record_bytes, IN_PROCESS_HITS)) * 1e6
    result["in_process_l1_hit_us"] = round(l1_hit_us, 3)
    api_side = harness.median(sides.api_rounds)
    text = "\n".join(
        (
            f"cache hits by id over {options.records:,} hot records ({len(sides.record_bytes)} bytes "
            f"each), {options.connections} concurrent, {options.duration:g} s a side, "
            f"median of {options.rounds} interleaved rounds",
            harness.side_line(
                f"A bare ASGI app, granian x{options.workers}", harness.median(sides.bare_rounds), "req"
            ),
            harness.side_line(f"B API GET, cache on, x{options.workers}", api_side, "req"),
            f"  ratio B/A {result['ratio']:.2f} (goal >= {GOAL}); B {api_side.per_s:,.0f} req/s "
            f"(goal >= {GOAL_API_PER_S:,}); L1 answered {sides.l1_hit_share:.2%} of B's lookups",
            f"  at a fixed {options.rate:,} req/s for {options.rate_duration:g} s (k6, "
            f"{sides.api_fixed.vus} VUs), p99 goal for B < {GOAL_P99_MS:g} ms:",
            fixed_line("A bare ASGI app", sides.bare_fixed),
            fixed_line("B API GET", sides.api_fixed),
            f"  in process: an L1 hit of TieredCache.get_or_load takes {l1_hit_us:.2f} µs",
        )
    )
    harness.emit(result, text, options, HEADLINE)
    return result


def fixed_line(label: str, measured: harness.FixedRate) -> str:
    return (
        f"  {label:<26}{measured.per_s:>10,.0f} req/s  p50 {measured.p50_ms:6.2f} ms  "
        f"p99 {measured.p99_ms:7.2f} ms  dropped {measured.dropped:,}  failed {measured.failed:,}  "
        f"[k6 took {measured.generator_cpu_s:.1f} CPU-s]"
    )


if __name__ == "__main__":
    main()
