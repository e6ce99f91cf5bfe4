"""The ASGI server choice: the same API under granian and uvicorn, 1 and 2 workers, under wrk.

    uv run python bench/server.py [--records 10000] [--duration 10] [--connections 32] [--json]

Each configuration is started as `sophia.api.server` starts it (settings `api_server`,
`api_workers`), warmed up, then measured on `GET /api/v1/records/{random id}` (the full stack:
auth, middleware, a Postgres lookup) and `GET /healthz` (the server and framework alone). Rounds go
through every configuration in turn, so a noisy neighbour hits all of them alike; the median counts.
"""

from __future__ import annotations

import argparse
from typing import Any

import harness

ENDPOINTS = ("records", "healthz")


HEADLINE = harness.Headline(
    anchor="uvicorn ×2, `GET /api/v1/records/{id}`",
    subject="granian ×2 (the default), the same",
    a=harness.Figure("results.server=uvicorn,workers=2,endpoint=records.per_s", "req/s"),
    b=harness.Figure("results.server=granian,workers=2,endpoint=records.per_s", "req/s"),
    ratio="ratios.granian/uvicorn records x2",
    section="ASGI server and workers",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="records seeded before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint and server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load after each start")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--servers", default="granian,uvicorn", help="comma-separated ASGI servers")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    harness.add_common_arguments(parser)
    options = parser.parse_args(argv)
    harness.wrk_binary()  # fail before starting anything when the load generator is missing
    options.servers = [name.strip() for name in options.servers.split(",") if name.strip()]
    options.workers = [int(count) for count in options.workers.split(",") if count.strip()]
    if not set(options.servers) <= {"granian", "uvicorn"} or not options.servers:
        parser.error("--servers takes granian and/or uvicorn")
    if not options.workers or min(options.workers) < 1 or options.rounds < 1 or options.duration <= 0:
        parser.error("--workers and --rounds must be >= 1, --duration > 0")
    return options


def measure(
    server: harness.ApiServer, endpoint: str, ids: list[str], options: argparse.Namespace
) -> harness.Measurement:
    load = {"duration_s": options.duration, "connections": options.connections, "threads": options.threads}
    if endpoint == "healthz":
        return harness.wrk(f"{server.base_url}/healthz", **load)
    return harness.wrk_records(server, ids, **load)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    configurations = [(name, workers) for name in options.servers for workers in options.workers]
    rounds: dict[tuple[str, int, str], list[harness.Measurement]] = {
        (name, workers, endpoint): [] for name, workers in configurations for endpoint in ENDPOINTS
    }
    with harness.environment() as env:
        ids = harness.run_async(harness.seed(env.database_url, options.records))
        for _ in range(options.rounds):
            for name, workers in configurations:
                uncached = {"SOPHIA_CACHE_ENABLED": "false"}  # the server's cost, not the cache's
                with harness.ApiServer(env, server=name, workers=workers, extra_env=uncached) as server:
                    if options.warmup > 0:
                        warmup = {"duration_s": options.warmup, "threads": options.threads}
                        harness.wrk_records(server, ids, connections=options.connections, **warmup)
                    for endpoint in ENDPOINTS:
                        harness.settle(options.settle)
                        rounds[name, workers, endpoint].append(measure(server, endpoint, ids, options))
        info = harness.machine(env)
    results = []
    for (name, workers, endpoint), measured in rounds.items():
        entry = {
            "server": name,
            "workers": workers,
            "endpoint": endpoint,
            **harness.median(measured).as_dict(),
        }
        entry["rounds"] = [measurement.as_dict() for measurement in measured]
        results.append(entry)
    result = {
        "benchmark": "server",
        "records": options.records,
        "duration_s": options.duration,
        "connections": options.connections,
        "wrk_threads": options.threads,
        "rounds": options.rounds,
        "results": results,
        "ratios": ratios(results),
        "fastest": fastest(results),
        "machine": info,
    }
    harness.emit(result, summary(result, options), options, HEADLINE)
    return result


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """granian / uvicorn per endpoint and worker count, where both were measured."""
    per_s = {(entry["server"], entry["workers"], entry["endpoint"]): entry["per_s"] for entry in results}
    found = {}
    for (name, workers, endpoint), value in per_s.items():
        other = per_s.get(("uvicorn", workers, endpoint))
        if name == "granian" and other:
            found[f"granian/uvicorn {endpoint} x{workers}"] = round(value / other, 3)
    return found


def fastest(results: list[dict[str, Any]]) -> dict[str, str]:
    """Per endpoint, the configuration with the most requests per second."""
    best = {}
    for endpoint in ENDPOINTS:
        entries = [entry for entry in results if entry["endpoint"] == endpoint]
        if entries:
            top = max(entries, key=lambda entry: entry["per_s"])
            best[endpoint] = f"{top['server']} x{top['workers']}"
    return best


def summary(result: dict[str, Any], options: argparse.Namespace) -> str:
    lines = [
        f"ASGI servers, {options.connections} connections, {options.duration:g} s per endpoint, "
        f"median of {options.rounds} rounds",
        f"  {'server':<8} {'workers':>7} {'endpoint':<8} {'req/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'others':>6}",
    ]
    for entry in result["results"]:
        lines.append(
            f"  {entry['server']:<8} {entry['workers']:>7} {entry['endpoint']:<8} {entry['per_s']:>10,.0f} "
            f"{entry['p50_ms']:>8.2f} {entry['p99_ms']:>8.2f} {entry['errors']:>6} {entry['other_cpu']:>6.0%}"
        )
    lines += [f"  ratio {name}: {value:.2f}" for name, value in result["ratios"].items()]
    lines += [f"  fastest on {endpoint}: {config}" for endpoint, config in result["fastest"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
