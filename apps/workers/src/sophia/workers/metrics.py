"""The workers' Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_DEPTH = Gauge(
    "sophia_outbox_depth", "Events in the outbox not yet in JetStream", multiprocess_mode="max"
)
RELAYED = Counter("sophia_outbox_relayed_total", "Outbox events published to JetStream", ["stream"])
RELAY_FAILURES = Counter(
    "sophia_outbox_relay_failures_total", "Relay batches that could not publish everything", ["reason"]
)
RELAY_BATCH_SECONDS = Histogram(
    "sophia_outbox_relay_batch_seconds",
    "Time to claim, publish and delete one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
