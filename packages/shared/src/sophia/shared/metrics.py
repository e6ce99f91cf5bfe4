"""Prometheus metrics shared by every process, and the exposition of the registry."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

HTTP_REQUESTS = Counter(
    "sophia_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "sophia_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
DB_POOL_SIZE = Gauge("sophia_db_pool_connections", "Connections open in the pool")
DB_POOL_IDLE = Gauge("sophia_db_pool_idle_connections", "Idle connections in the pool")
DB_POOL_MAX = Gauge("sophia_db_pool_max_connections", "Most connections the pool may open")
INGESTED_RECORDS = Counter("sophia_ingested_records_total", "Records written through the API", ["path"])


def render_latest() -> tuple[bytes, str]:
    """The registry in Prometheus text format and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
