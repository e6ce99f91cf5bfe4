"""Prometheus metrics shared by every process, and the exposition of the registry.

With several worker processes the server sets `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's own
switch, read when it is imported): every worker then writes its samples there and `/metrics`,
whichever worker answers, reports the sum over all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

HTTP_LATENCY = Histogram(
    "sophia_http_request_duration_seconds",
    "HTTP request latency by route template and status (its _count counts the requests)",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
DB_POOL_SIZE = Gauge(
    "sophia_db_pool_connections", "Connections open in the pool", multiprocess_mode="livesum"
)
DB_POOL_IDLE = Gauge(
    "sophia_db_pool_idle_connections", "Idle connections in the pool", multiprocess_mode="livesum"
)
DB_POOL_MAX = Gauge(
    "sophia_db_pool_max_connections", "Most connections the pool may open", multiprocess_mode="livesum"
)
INGESTED_RECORDS = Counter("sophia_ingested_records_total", "Records written through the API", ["path"])


def forget_dead_workers(own_exit: bool = False) -> None:
    """Drop the live gauges of workers that are gone (respawned by the server), or this one's."""
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if not directory:
        return
    if own_exit:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        return
    for file in Path(directory).glob("gauge_live*_*.db"):
        pid = int(file.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, someone else's
            continue


def render_latest() -> tuple[bytes, str]:
    """The registry in Prometheus text format (summed over workers) and its content type."""
    if not os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
