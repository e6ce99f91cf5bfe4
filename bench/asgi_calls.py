"""What the API's own Python costs a request: interpreted calls (counted, so the same on any
machine and at any load) and CPU, with requests driven straight into the ASGI app in this process:
no server, no client, no socket to the caller; the engines are real.

    uv run python bench/asgi_calls.py [--requests 2000] [--profile put [--top 40]] [--json]

Side A is `GET /healthz` (every middleware, no key, no engine): the floor each request pays. Side B
is each kind of request in turn: a record read by id (answered before FastAPI, from L1), a cached
page of `GET /api/v1/records`, a junk cursor (422), a cached `GET /api/v1/analytics/pipeline`, a
`PUT` of one record (PostgreSQL, then the cache's invalidation in Redis). Calls are counted by
`cProfile` over `--requests` requests after a warm-up; CPU (`time.process_time`, this process's
threads) over as many again without the profiler. The headline is a cached page's calls against
`/healthz`'s. On a machine whose speed moves between runs (docs/benchmarks.md, machine `d1c0`),
the counts are the figure to compare; the CPU shows what they cost here. `--profile KIND` also
prints that kind's functions by cumulative time under the profiler (to stderr), to find where.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import harness
import orjson

from sophia.api.app import create_app
from sophia.shared.settings import Settings

Call = Callable[[int], Awaitable[int]]
JUNK_CURSOR = "not-a-cursor"

HEADLINE = harness.Headline(
    anchor="`GET /healthz` into the ASGI app, no server",
    subject="a cached page of `GET /api/v1/records`, the same way",
    a=harness.Figure("floor.calls", "calls/request"),
    b=harness.Figure("kinds.cached_page.calls", "calls/request"),
    ratio_label="B/A",
    section="One dependency a route",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind, counted and timed")
    parser.add_argument("--records", type=int, default=100, help="records seeded")
    parser.add_argument(
        "--profile",
        metavar="KIND",
        help="also print KIND's functions by calls, inclusive (healthz, put, ...)",
    )
    parser.add_argument("--top", type=int, default=40, help="functions --profile prints")
    harness.add_common_arguments(parser, timed=False)
    return parser.parse_args(argv)


class Driver:
    """Sends ASGI requests to one app in this process and returns their status."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.authorization = b"Bearer " + key.encode()

    async def request(self, method: str, path: str, query: str = "", body: bytes = b"", *, key: bool) -> int:
        headers = [(b"host", b"bench")]
        if key:
            headers.append((b"authorization", self.authorization))
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a client that stays: the app never asks again
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


def kinds(driver: Driver, record_id: str) -> dict[str, tuple[Call, int]]:
    """Each kind of request: how to send the i-th, and the status it must get."""
    body = orjson.dumps({"data": {"stage": "qualified", "amount": "500"}})
    return {
        "read_by_id": (lambda i: driver.request("GET", f"/api/v1/records/{record_id}", key=True), 200),
        "cached_page": (lambda i: driver.request("GET", "/api/v1/records", "limit=5", key=True), 200),
        "junk_cursor": (
            lambda i: driver.request("GET", "/api/v1/records", f"cursor={JUNK_CURSOR}", key=True),
            422,
        ),
        "analytics": (lambda i: driver.request("GET", "/api/v1/analytics/pipeline", key=True), 200),
        "put": (
            lambda i: driver.request(
                "PUT", f"/api/v1/records/bench/deal/calls-{i % 50}", body=body, key=True
            ),
            200,
        ),
    }


async def measure(call: Call, status: int, requests: int, top: int = 0) -> dict[str, float]:
    """Calls a request (profiled), then CPU a request (not profiled); every answer checked. With
    `top`, the `top` functions by cumulative time under the profiler are printed to stderr."""
    for i in range(50):  # warm: caches filled, records created, pools open
        got = await call(i)
        if got not in (status, 201):
            raise RuntimeError(f"expected {status}, got {got}")
    profile = cProfile.Profile()
    profile.enable()
    for i in range(requests):
        await call(i)
    profile.disable()
    stats = pstats.Stats(profile, stream=sys.stderr)
    calls = stats.total_calls  # type: ignore[attr-defined]
    if top:
        stats.sort_stats("cumulative").print_stats(top)
    started = time.process_time()
    for i in range(requests):
        got = await call(i)
        if got != status:
            raise RuntimeError(f"expected {status}, got {got}")
    cpu_s = time.process_time() - started
    return {"calls": round(calls / requests, 1), "cpu_ms": round(cpu_s / requests * 1000, 4)}


async def run(env: harness.Environment, options: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        database_url=env.database_url,
        redis_url=env.redis_url,
        nats_url=env.nats_url,
        data_dir=env.work_dir / "asgi-calls",
        log_level="warning",
        ml_enabled=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        driver = Driver(app, env.admin_key)
        ids = await harness.seed(env.database_url, options.records)

        def top(kind: str) -> int:
            return options.top if options.profile == kind else 0

        floor = await measure(
            lambda i: driver.request("GET", "/healthz", key=False), 200, options.requests, top("healthz")
        )
        measured = {
            name: await measure(call, status, options.requests, top(name))
            for name, (call, status) in kinds(driver, ids[0]).items()
        }
    return {"floor": floor, "kinds": measured}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        measured = harness.run_async(run(env, options))
        result = {
            "benchmark": "asgi_calls",
            "requests": options.requests,
            **measured,
            "ratio": round(measured["kinds"]["cached_page"]["calls"] / measured["floor"]["calls"], 2),
            "machine": harness.machine(env),
        }
    rows = [
        f"  {'A /healthz':34s} {result['floor']['calls']:8.1f} calls  {result['floor']['cpu_ms']:.3f} ms CPU"
    ]
    for name, figures in result["kinds"].items():
        rows.append(f"  {'B ' + name:34s} {figures['calls']:8.1f} calls  {figures['cpu_ms']:.3f} ms CPU")
    text = "\n".join(
        (
            f"the API's Python a request, {options.requests:,} requests of each kind into the ASGI app",
            *rows,
            f"  ratio B/A (a cached page against /healthz, calls) {result['ratio']:.2f}",
        )
    )
    harness.emit(result, text, options, HEADLINE)
    return result


if __name__ == "__main__":
    main()
