"""The ops view: the platform's figures now, read from each process's Prometheus metrics.

`OpsView(settings, database).snapshot()` reads this process's registry (`render_latest`: summed
over the API's workers), GETs the workers' and the real-time service's `/metrics`
(`web_workers_metrics_url`, `web_realtime_metrics_url`; one try each within `scrape_timeout_s`,
behind a breaker of its own) and counts the outbox. A source that does not answer is reported in
`sources` and its figures are None or left out; nothing is raised.

Request, error and cache figures are the API's, over a window: the difference between this
snapshot's counters and earlier ones kept in memory (the newest kept at least `window_s` old, else
the oldest kept), so the window is `window_s` long give or take the polling interval. The first
snapshot has nothing to subtract: its `window_s` is 0, its rates are None and its error rate,
latencies and hit rates are cumulative since the API started. Counters lower than before (a
restarted process) start the window afresh. Gauges (lag, breakers, connections, queues) are as
scraped.

The snapshot (JSON-serialisable; every figure None where unknown):

    at                      time of the snapshot, ISO 8601 UTC
    window_s                seconds the windowed figures span (0: cumulative, see above)
    sources                 {"api", "workers", "realtime", "database": "ok" | why not | "not configured"}
    request_rate            requests per second, every route
    error_rate              share of them answered 5xx (0 to 1)
    p50_ms, p95_ms, p99_ms  latency percentiles, interpolated within the histogram's buckets
    routes                  [{method, route, requests, request_rate, error_rate, p50_ms, p95_ms,
                            p99_ms}], busiest first
    cache_hit_rate          hits over lookups, every tier
    cache_tiers             [{tier, hits, misses, hit_rate}]
    outbox_depth            events not yet relayed to JetStream
    outbox_exact            False: an estimate (a backlog past `outbox.EXACT_DEPTH_UP_TO`)
    consumer_lag            [{consumer, lag}]: messages not yet delivered, the workers'
    breakers                [{source, dependency, state}], state "closed", "half_open" or "open"
    connections             WebSocket clients of the real-time service
    ml_queue_depth          inputs waiting for a model call, the API's and the workers' together
    ml_queues               [{source, model, depth}]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sophia.core.errors import Unavailable
from sophia.database import Database, outbox
from sophia.shared.logging import get_logger
from sophia.shared.metrics import HTTP_LATENCY, render_latest
from sophia.shared.resilience import BREAKER_STATE, BreakerOpen, BreakerState, CircuitBreaker
from sophia.shared.settings import Settings

log = get_logger(__name__)

# Names of metrics other processes define (their modules are out of this layer's reach).
HTTP_HISTOGRAM = next(iter(HTTP_LATENCY.describe())).name
BREAKERS = next(iter(BREAKER_STATE.describe())).name
CACHE_HITS = "sophia_cache_hits_total"  # sophia.cache.metrics
CACHE_MISSES = "sophia_cache_misses_total"
CONSUMER_LAG = "sophia_stream_consumer_lag"  # sophia.workers.metrics
CONNECTIONS = "sophia_realtime_connections"  # sophia.realtime.server
ML_QUEUE_DEPTH = "sophia_ml_queue_depth"  # sophia.ml.batching

NOT_CONFIGURED = "not configured"
KEEP_EVERY_S = 1.0
"""Counters are kept at most this often: many pollers do not grow the window's memory."""
MAX_METRICS_BYTES = 16 * 1024 * 1024
QUANTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}
_STATES = {int(state): state.name.lower() for state in BreakerState}

Route = tuple[str, str]
"""(method, route template)"""


class ScrapeFailed(Exception):
    """A process's /metrics did not answer 200 with Prometheus text."""


@dataclass(frozen=True, slots=True)
class Latencies:
    """Requests counted by latency bucket (upper bound in seconds, cumulative) and those answered 5xx."""

    buckets: dict[float, float]
    errors: float

    @property
    def requests(self) -> float:
        return self.buckets.get(math.inf, 0.0)

    def since(self, earlier: Latencies | None) -> Latencies:
        """What was counted after `earlier`; everything if a count went down (a restart)."""
        if earlier is None:
            return self
        buckets = {bound: count - earlier.buckets.get(bound, 0.0) for bound, count in self.buckets.items()}
        errors = self.errors - earlier.errors
        if errors < 0 or any(count < 0 for count in buckets.values()):
            return self
        return Latencies(buckets, errors)

    def quantile_ms(self, quantile: float) -> float | None:
        """As Prometheus's `histogram_quantile`: linear within the bucket the rank falls in; in
        the last (+Inf) bucket, the highest finite bound."""
        total = self.requests
        if total <= 0:
            return None
        rank = quantile * total
        lower, below = 0.0, 0.0
        for upper in sorted(self.buckets):
            count = self.buckets[upper]
            if count >= rank:
                if math.isinf(upper):
                    return lower * 1000
                return (lower + (upper - lower) * (rank - below) / (count - below)) * 1000
            lower, below = upper, count
        return None

    @staticmethod
    def total(parts: Iterable[Latencies]) -> Latencies:
        buckets: dict[float, float] = defaultdict(float)
        errors = 0.0
        for part in parts:
            for bound, count in part.buckets.items():
                buckets[bound] += count
            errors += part.errors
        return Latencies(dict(buckets), errors)


@dataclass(frozen=True, slots=True)
class Counters:
    """The API's counters a window is computed from, as read at `at_s` (monotonic)."""

    at_s: float
    routes: dict[Route, Latencies]
    cache: dict[str, tuple[float, float]]
    """tier: (hits, misses)"""

    def since(self, earlier: Counters | None) -> Counters:
        routes = {
            route: counts.since(earlier.routes.get(route) if earlier else None)
            for route, counts in self.routes.items()
        }
        cache = dict(self.cache)
        for tier, (hits, misses) in self.cache.items():
            before_hits, before_misses = earlier.cache.get(tier, (0.0, 0.0)) if earlier else (0.0, 0.0)
            if hits >= before_hits and misses >= before_misses:
                cache[tier] = (hits - before_hits, misses - before_misses)
        return Counters(self.at_s, routes, cache)


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (`ValueError` if it is not one)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def read_counters(samples: Iterable[Sample], at_s: float) -> Counters:
    buckets: dict[Route, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    errors: dict[Route, float] = defaultdict(float)
    cache: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for sample in samples:
        labels = sample.labels
        if sample.name == f"{HTTP_HISTOGRAM}_bucket":
            buckets[labels["method"], labels["route"]][float(labels["le"])] += sample.value
        elif sample.name == f"{HTTP_HISTOGRAM}_count" and labels.get("status", "").startswith("5"):
            errors[labels["method"], labels["route"]] += sample.value
        elif sample.name in (CACHE_HITS, CACHE_MISSES):
            cache[labels.get("tier", "")][1 if sample.name == CACHE_MISSES else 0] += sample.value
    routes = {route: Latencies(dict(counts), errors[route]) for route, counts in buckets.items()}
    return Counters(at_s, routes, {tier: (hits, misses) for tier, (hits, misses) in cache.items()})


def values(samples: Iterable[Sample], name: str, label: str) -> dict[str, list[float]]:
    """The values of metric `name` by its `label` (several where other labels, as a multiprocess
    gauge's pid, tell them apart)."""
    found: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        if sample.name == name:
            found[sample.labels.get(label, "")].append(sample.value)
    return dict(found)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _figures(counts: Latencies, window_s: float) -> dict[str, float | None]:
    return {
        "request_rate": counts.requests / window_s if window_s > 0 else None,
        "error_rate": _share(counts.errors, counts.requests),
        **{name: counts.quantile_ms(quantile) for name, quantile in QUANTILES.items()},
    }


async def http_get(url: str, *, timeout_s: float, max_bytes: int = MAX_METRICS_BYTES) -> bytes:
    """The body of a 200 answer to an HTTP/1.1 GET of `url`, on a connection of its own."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScrapeFailed(f"not an http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            ssl=parts.scheme == "https",
        )
        try:
            writer.write(request.encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            body = bytearray()
            while chunk := await reader.read(65_536):
                body += chunk
                if len(body) > max_bytes:
                    raise ScrapeFailed(f"answered more than {max_bytes} bytes")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            raise ScrapeFailed(f"answered no HTTP response head: {error}") from error
        finally:
            writer.close()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if status_line.split(" ", 2)[1:2] != ["200"]:
        raise ScrapeFailed(f"answered {status_line.strip()!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return _dechunk(bytes(body)) if headers.get("transfer-encoding") == "chunked" else bytes(body)


def _dechunk(body: bytes) -> bytes:
    """The content of a chunked transfer coding."""
    content, rest = bytearray(), body
    try:
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                return bytes(content)
            content += rest[:size]
            rest = rest[size + 2 :]
    except ValueError as error:
        raise ScrapeFailed("answered a malformed chunked body") from error


def _own_metrics() -> bytes:
    return render_latest()[0]


class OpsView:
    """The platform's ops figures, read live on each `snapshot()`; keeps the API's recent
    counters (a window's worth) to turn them into rates."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        window_s: float = 15.0,
        scrape_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        own_metrics: Callable[[], bytes] = _own_metrics,
    ) -> None:
        self.settings = settings
        self.database = database
        self.window_s = window_s
        self.scrape_timeout_s = scrape_timeout_s
        self._clock = clock
        self._own_metrics = own_metrics
        self._urls = {
            "workers": settings.web_workers_metrics_url,
            "realtime": settings.web_realtime_metrics_url,
        }
        self._breakers = {
            source: CircuitBreaker(
                f"{source}_metrics",
                failure_rate=settings.breaker_failure_rate,
                window=settings.breaker_window,
                min_calls=settings.breaker_min_calls,
                open_s=settings.breaker_open_s,
                failure_types=(OSError, TimeoutError, ScrapeFailed),
            )
            for source, url in self._urls.items()
            if url
        }
        self._kept: deque[Counters] = deque()
        self._status: dict[str, str] = {}

    async def snapshot(self) -> dict[str, Any]:
        (
            (workers, workers_status),
            (realtime, realtime_status),
            (depth, database_status),
        ) = await asyncio.gather(self._scrape("workers"), self._scrape("realtime"), self._outbox_depth())
        own = parse(self._own_metrics().decode())
        now = read_counters(own, self._clock())
        start = self._window_start(now)
        window_s = now.at_s - start.at_s if start else 0.0
        window = now.since(start if window_s > 0 else None)
        scraped = {"api": own, "workers": workers, "realtime": realtime}
        sources = {
            "api": "ok",
            "workers": workers_status,
            "realtime": realtime_status,
            "database": database_status,
        }
        for source, status in sources.items():
            self._note(source, status)
        return {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "window_s": window_s,
            "sources": sources,
            **_figures(Latencies.total(window.routes.values()), window_s),
            "routes": _routes(window, window_s),
            **_cache(window),
            "outbox_depth": depth.events if depth else None,
            "outbox_exact": depth.exact if depth else None,
            "consumer_lag": [
                {"consumer": consumer, "lag": max(lags)}
                for consumer, lags in sorted(values(workers, CONSUMER_LAG, "consumer").items())
            ],
            "breakers": _breakers(scraped),
            "connections": _connections(realtime) if realtime_status == "ok" else None,
            **_ml_queues({"api": own, "workers": workers}),
        }

    def _window_start(self, now: Counters) -> Counters | None:
        """The counters the window starts from (None: none kept yet); keeps `now` for later ones."""
        kept = self._kept
        while len(kept) >= 2 and now.at_s - kept[1].at_s >= self.window_s:
            kept.popleft()
        start = kept[0] if kept else None
        if not kept or now.at_s - kept[-1].at_s >= KEEP_EVERY_S:
            kept.append(now)
        return start

    async def _scrape(self, source: str) -> tuple[list[Sample], str]:
        """A process's samples and "ok", or none and why not."""
        url = self._urls[source]
        if not url:
            return [], NOT_CONFIGURED
        try:
            async with self._breakers[source]:
                body = await http_get(url, timeout_s=self.scrape_timeout_s)
                try:
                    return parse(body.decode()), "ok"
                except ValueError as error:  # UnicodeDecodeError included
                    raise ScrapeFailed(f"answered something other than Prometheus text: {error}") from error
        except BreakerOpen as error:
            return [], error.detail
        except TimeoutError:
            return [], f"no answer within {self.scrape_timeout_s:g} s"
        except OSError as error:
            return [], f"{type(error).__name__}: {error.strerror or error}"
        except ScrapeFailed as error:
            return [], str(error)

    async def _outbox_depth(self) -> tuple[outbox.Depth | None, str]:
        timeout_s = self.settings.engine_timeout_s
        try:
            async with asyncio.timeout(timeout_s), self.database.connection() as connection:
                return await outbox.depth(connection), "ok"
        except Unavailable as error:
            return None, error.detail
        except TimeoutError:
            return None, f"no answer within {timeout_s:g} s"

    def _note(self, source: str, status: str) -> None:
        """Log a source that stops or starts answering (once per change, not once per poll)."""
        before = self._status.get(source)
        self._status[source] = status
        if status in (before, NOT_CONFIGURED):
            return
        if status != "ok":
            log.warning("ops_source_unavailable", source=source, why=status)
        elif before is not None:
            log.info("ops_source_answers", source=source)


def _routes(window: Counters, window_s: float) -> list[dict[str, object]]:
    busiest = sorted(window.routes.items(), key=lambda item: (-item[1].requests, item[0]))
    return [
        {"method": method, "route": route, "requests": int(counts.requests), **_figures(counts, window_s)}
        for (method, route), counts in busiest
    ]


def _cache(window: Counters) -> dict[str, object]:
    tiers = [
        {"tier": tier, "hits": int(hits), "misses": int(misses), "hit_rate": _share(hits, hits + misses)}
        for tier, (hits, misses) in sorted(window.cache.items())
    ]
    hits = sum(hits for hits, _ in window.cache.values())
    lookups = hits + sum(misses for _, misses in window.cache.values())
    return {"cache_hit_rate": _share(hits, lookups), "cache_tiers": tiers}


def _breakers(scraped: dict[str, list[Sample]]) -> list[dict[str, str]]:
    return [
        {"source": source, "dependency": dependency, "state": _STATES.get(int(max(states)), str(max(states)))}
        for source, samples in scraped.items()
        for dependency, states in sorted(values(samples, BREAKERS, "dependency").items())
    ]


def _connections(samples: list[Sample]) -> float:
    return sum(sample.value for sample in samples if sample.name == CONNECTIONS)


def _ml_queues(scraped: dict[str, list[Sample]]) -> dict[str, object]:
    depths = {
        (source, model): sum(found)
        for source, samples in scraped.items()
        for model, found in sorted(values(samples, ML_QUEUE_DEPTH, "model").items())
    }
    queues = [{"source": source, "model": model, "depth": depth} for (source, model), depth in depths.items()]
    return {"ml_queue_depth": sum(depths.values()) if depths else None, "ml_queues": queues}
