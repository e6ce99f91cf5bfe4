"""The ops view reads real Prometheus text (made by prometheus_client), real /metrics servers and a
real database; its panel renders what it read, escaped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sophia.database import Database, outbox
from sophia.shared.metrics import HTTP_LATENCY
from sophia.shared.settings import Settings
from sophia.web import ops
from sophia.web.ops import OpsView

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.1, 1.0, 2.5)


@dataclass
class Clock:
    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class ApiMetrics:
    """What an API process exports, in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.latency = Histogram(
            ops.HTTP_HISTOGRAM,
            "latency",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.hits = Counter(ops.CACHE_HITS, "hits", ["tier"], registry=self.registry)
        self.misses = Counter(ops.CACHE_MISSES, "misses", ["tier"], registry=self.registry)

    def requests(self, method: str, route: str, *, status: str = "200", seconds: float, count: int) -> None:
        for _ in range(count):
            self.latency.labels(method, route, status).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def view(
    settings: Settings,
    database: Database,
    api: ApiMetrics,
    clock: Clock,
    *,
    window_s: float = 15.0,
    scrape_timeout_s: float = 1.0,
) -> OpsView:
    """An ops view of `api`'s metrics (the other processes' as `settings` say), on `clock`."""
    return OpsView(
        settings,
        database,
        window_s=window_s,
        scrape_timeout_s=scrape_timeout_s,
        clock=clock,
        own_metrics=api.text,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def http_server(answer: bytes | None) -> AsyncIterator[str]:
    """A server on a free port answering every request with `answer` (None: never answering);
    yields its /metrics URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            await reader.read()  # until the client gives up
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.close()


def chunked(body: bytes) -> bytes:
    middle = len(body) // 2
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:middle], body[middle:])
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + chunks + b"0\r\n\r\n"


async def test_rates_latencies_and_hit_rates_are_those_of_the_window_between_two_snapshots(
    settings, database
):
    api, clock = ApiMetrics(), Clock()
    api.requests("GET", "/a", seconds=2.0, count=8)
    api.requests("GET", "/a", status="500", seconds=2.0, count=2)
    api.hits.labels("l1").inc(30)
    opsview = view(settings, database, api, clock)

    first = await opsview.snapshot()
    assert first["window_s"] == 0
    assert first["request_rate"] is None  # no time span yet: the rest is cumulative
    assert first["error_rate"] == pytest.approx(0.2)
    assert first["p50_ms"] == pytest.approx(1750)  # half-way through the (1, 2.5] s bucket
    assert first["cache_hit_rate"] == 1.0

    api.requests("GET", "/a", seconds=0.003, count=100)
    api.requests("POST", "/b", seconds=0.003, count=45)
    api.requests("POST", "/b", status="503", seconds=0.003, count=5)
    api.hits.labels("l1").inc(9)
    api.misses.labels("l1").inc(1)
    clock.now_s += 10
    second = await opsview.snapshot()

    assert second["window_s"] == 10
    assert second["request_rate"] == pytest.approx(15.0)
    assert second["error_rate"] == pytest.approx(5 / 150)
    assert second["p50_ms"] == pytest.approx(3.75)  # only the window's requests: all in (2.5, 5] ms
    assert second["p99_ms"] == pytest.approx(4.975)
    assert [(route["method"], route["route"]) for route in second["routes"]] == [
        ("GET", "/a"),
        ("POST", "/b"),
    ]
    get_a, post_b = second["routes"]
    assert get_a["requests"] == 100
    assert get_a["request_rate"] == pytest.approx(10.0)
    assert get_a["error_rate"] == 0
    assert post_b["error_rate"] == pytest.approx(0.1)
    assert second["cache_hit_rate"] == pytest.approx(0.9)
    assert second["cache_tiers"] == [{"tier": "l1", "hits": 9, "misses": 1, "hit_rate": pytest.approx(0.9)}]
    orjson.dumps(second)  # as the page's fragment or a JSON answer would send it


async def test_the_window_starts_at_the_newest_snapshot_at_least_window_s_old(settings, database):
    api, clock = ApiMetrics(), Clock()
    opsview = view(settings, database, api, clock, window_s=15.0)
    for _ in range(3):  # snapshots at 0, 10 and 20 s, 10 requests between each
        await opsview.snapshot()
        api.requests("GET", "/a", seconds=0.003, count=10)
        clock.now_s += 10

    latest = await opsview.snapshot()  # at 30 s: the one at 10 s is the newest at least 15 s old

    assert latest["window_s"] == 20
    assert latest["routes"][0]["requests"] == 20


async def test_counters_lower_than_before_start_the_window_afresh(settings, database):
    before, clock = ApiMetrics(), Clock()
    before.requests("GET", "/a", seconds=0.003, count=100)
    restarted = ApiMetrics()
    restarted.requests("GET", "/a", seconds=0.003, count=5)
    answers = iter([before.text(), restarted.text()])
    opsview = OpsView(settings, database, clock=clock, own_metrics=lambda: next(answers))

    await opsview.snapshot()
    clock.now_s += 10
    after_restart = await opsview.snapshot()

    assert after_restart["routes"][0]["requests"] == 5
    assert after_restart["request_rate"] == pytest.approx(0.5)


async def test_the_workers_and_the_real_time_service_are_scraped_over_http(settings, database):
    workers = CollectorRegistry()
    Gauge(ops.CONSUMER_LAG, "lag", ["consumer"], registry=workers).labels("records-sink").set(42)
    Gauge(ops.BREAKERS, "breakers", ["dependency"], registry=workers).labels("nats").set(2)
    Gauge(ops.ML_QUEUE_DEPTH, "queue", ["model"], registry=workers).labels("sentiment").set(3)
    realtime = CollectorRegistry()
    Gauge(ops.CONNECTIONS, "connections", registry=realtime).set(7)
    Gauge(ops.BREAKERS, "breakers", ["dependency"], registry=realtime).labels("postgres").set(1)
    plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n"
    async with (
        http_server(plain + generate_latest(workers)) as workers_url,
        http_server(chunked(generate_latest(realtime))) as realtime_url,
    ):
        scraped = settings.model_copy(
            update={"web_workers_metrics_url": workers_url, "web_realtime_metrics_url": realtime_url}
        )
        snapshot = await view(scraped, database, ApiMetrics(), Clock()).snapshot()

    assert snapshot["sources"] == {"api": "ok", "workers": "ok", "realtime": "ok", "database": "ok"}
    assert snapshot["consumer_lag"] == [{"consumer": "records-sink", "lag": 42}]
    assert snapshot["breakers"] == [
        {"source": "workers", "dependency": "nats", "state": "open"},
        {"source": "realtime", "dependency": "postgres", "state": "half_open"},
    ]
    assert snapshot["connections"] == 7
    assert snapshot["ml_queue_depth"] == 3
    assert snapshot["ml_queues"] == [{"source": "workers", "model": "sentiment", "depth": 3}]


async def test_processes_that_do_not_answer_are_reported_within_the_timeout_not_raised(settings, database):
    async with http_server(None) as silent:
        unreachable = settings.model_copy(
            update={
                "web_workers_metrics_url": f"http://127.0.0.1:{closed_port()}/metrics",
                "web_realtime_metrics_url": silent,
            }
        )
        opsview = view(unreachable, database, ApiMetrics(), Clock(), scrape_timeout_s=0.1)
        started = time.monotonic()
        snapshot = await opsview.snapshot()
        elapsed_s = time.monotonic() - started

    assert elapsed_s < 1.0
    assert snapshot["sources"]["workers"].startswith("ConnectionRefusedError: ")
    assert snapshot["sources"]["realtime"] == "no answer within 0.1 s"
    assert snapshot["connections"] is None
    assert snapshot["consumer_lag"] == []


async def test_a_process_answering_an_error_is_reported_with_its_status(settings, database):
    refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nno!\r\n"
    async with http_server(refused) as url:
        snapshot = await view(
            settings.model_copy(update={"web_workers_metrics_url": url}), database, ApiMetrics(), Clock()
        ).snapshot()

    assert snapshot["sources"]["workers"] == "answered 'HTTP/1.1 401 Unauthorized'"
    assert snapshot["sources"]["realtime"] == ops.NOT_CONFIGURED


async def test_a_process_that_keeps_failing_is_not_asked_while_its_breaker_is_open(settings, database):
    async with http_server(None) as silent:
        failing = settings.model_copy(update={"web_workers_metrics_url": silent, "breaker_min_calls": 1})
        opsview = view(failing, database, ApiMetrics(), Clock(), scrape_timeout_s=0.05)
        assert (await opsview.snapshot())["sources"]["workers"] == "no answer within 0.05 s"
        opsview.scrape_timeout_s = 5.0  # asked again, the silent process would now hold it 5 s
        started = time.monotonic()
        snapshot = await opsview.snapshot()

    assert time.monotonic() - started < 2.0
    assert snapshot["sources"]["workers"] == "workers_metrics is unavailable"


async def test_the_api_figures_come_from_this_process_and_the_outbox_depth_from_the_database(
    settings, migrated_database
):
    HTTP_LATENCY.labels("GET", "/ops-test/{id}", "200").observe(0.004)
    async with Database(settings, dsn=await migrated_database()) as database:
        opsview = OpsView(settings, database)  # this process's own registry, as in the API
        empty = await opsview.snapshot()
        async with database.connection() as connection, connection.transaction():
            for number in range(3):
                await outbox.audit(connection, "test", "ops.check", f"target/{number}", {})
        waiting = await opsview.snapshot()

    assert "/ops-test/{id}" in [route["route"] for route in waiting["routes"]]
    assert (empty["outbox_depth"], empty["outbox_exact"]) == (0, True)
    assert (waiting["outbox_depth"], waiting["outbox_exact"]) == (3, True)
    assert waiting["sources"]["database"] == "ok"


async def test_an_unreachable_database_leaves_the_outbox_depth_unknown(settings):
    async with contextlib.AsyncExitStack() as stack:
        database = Database(settings, dsn=f"postgresql://sophia@127.0.0.1:{closed_port()}/sophia")
        await database.open(require_database=False)
        stack.push_async_callback(database.close)
        snapshot = await view(settings, database, ApiMetrics(), Clock()).snapshot()

    assert snapshot["outbox_depth"] is None
    assert snapshot["sources"]["database"].startswith("PostgreSQL is unavailable")


async def test_the_panel_shows_the_figures_and_escapes_a_hostile_route(settings, database):
    from sophia.web.pages import environment  # the dashboard's own: autoescape, its number filters

    hostile = '/x"><script>alert(1)</script>'
    api, clock = ApiMetrics(), Clock()
    opsview = view(settings, database, api, clock)
    await opsview.snapshot()
    api.requests("GET", hostile, seconds=0.003, count=150)
    api.hits.labels("l1").inc(3)
    api.misses.labels("l1").inc(1)
    clock.now_s += 10
    snapshot = await opsview.snapshot()

    html = environment().get_template("ops_panel.html").render(ops=snapshot)

    assert '<span class="value" id="ops-request-rate" data-value="15.0">15 req/s</span>' in html
    assert 'id="ops-cache-hit-rate" data-value="0.75">75.0 %</span>' in html
    assert 'id="ops-connections" data-value="">—</span>' in html  # the real-time service: not configured
    assert 'data-route="/x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert "<script>" not in html
    assert "style=" not in html
