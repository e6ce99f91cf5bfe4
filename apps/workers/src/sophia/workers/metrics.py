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

CONSUMED = Counter("sophia_stream_consumed_total", "Messages a stream processor fetched", ["consumer"])
ACKED = Counter("sophia_stream_acked_total", "Messages acked once their sink returned", ["consumer"])
EVENTS_ACKED = Counter(
    "sophia_stream_events_acked_total",
    "Events carried by the messages acked once their sink returned",
    ["consumer"],
)
FAILED = Counter(
    "sophia_stream_failed_total", "Messages their sink failed on alone (NAKed or dead-lettered)", ["consumer"]
)
REDELIVERED = Counter(
    "sophia_stream_redelivered_total", "Messages fetched again after an earlier delivery", ["consumer"]
)
DEAD_LETTERED = Counter(
    "sophia_stream_dead_lettered_total", "Messages filed on the dead-letter stream", ["consumer", "reason"]
)
CONSUMER_ERRORS = Counter(
    "sophia_stream_consumer_errors_total",
    "NATS failures of a stream processor (it backs off and resubscribes)",
    ["consumer", "reason"],
)
BATCH_SIZE = Histogram(
    "sophia_stream_batch_size",
    "Messages per micro-batch",
    ["consumer"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
PROCESSING_SECONDS = Histogram(
    "sophia_stream_processing_seconds",
    "Time a sink took over one micro-batch",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
CONSUMER_LAG = Gauge(
    "sophia_stream_consumer_lag",
    "Messages in the stream not yet delivered to the consumer (num_pending)",
    ["consumer"],
    multiprocess_mode="livemax",
)
