"""Events end to end: raw nats-py JetStream publishing (side A, the anchor) against clients posting
batches to `POST /api/v1/events` that the stream processors persist into PostgreSQL (side B).

    uv run python bench/events.py [--duration 120] [--clients 4] [--batch 2000] [--json]

A publishes envelopes of B's size straight to a stream of its own (nats-py and nothing else), both
ways nats-py can: awaiting each ack (`js.publish`, as Sophia's publisher does) and pipelined
(`js.publish_async`). B starts the API (granian x2) and `python -m sophia.workers` on the same
engines, with streams of this run's own. Each client sends NDJSON batches whose events carry their
own ids and `occurred_at` = the moment of sending, for `--duration` seconds; a 503 is sent again,
same ids, after its Retry-After. Then B waits until every accepted event is in `sophia_core.events`.
Lag is what PostgreSQL records: `received_at` (when the sink's transaction began) - `occurred_at`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import harness
import orjson
from harness import event_load
from harness.jetstream import ID_MARK

from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.streams import StreamSpec

GOAL_PER_MIN = 1_000_000
GOAL_CPU_US = 60
"""Issue 16: at most this much CPU an event end to end, so 1,000,000 a minute takes half of 2 cores."""
PIPELINE_COMPONENTS = ("api", "workers", "nats", "postgres")
SOURCE = "bench"
WARMUP_SOURCE = "bench-warmup"
CONSUMER = "events-to-postgres"
WARMUP_BATCH = 100
WARMUP_S = 60.0
STORED_SQL = """
SELECT count(*) AS persisted, max(received_at) AS last_received_at,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms, max(lag_ms) AS max_ms
FROM (SELECT received_at, extract(epoch FROM received_at - occurred_at)::float8 * 1000 AS lag_ms
      FROM sophia_core.events WHERE source = $1) AS stored
"""


HEADLINE = harness.Headline(
    anchor="raw nats-py JetStream publishing",
    subject="`POST /api/v1/events` to rows in PostgreSQL",
    a=harness.Figure("anchor_per_min", "events/min"),
    b=harness.Figure("persisted_per_min", "events/min"),
    goals=(
        harness.Goal(f"≥ {GOAL_PER_MIN:,} events/min persisted, all accepted", path="goal_met"),
        harness.Goal(
            f"≤ {GOAL_CPU_US} µs of CPU an event (API, workers, NATS, PostgreSQL)",
            path="cpu_us_per_event",
            at_most=GOAL_CPU_US,
        ),
    ),
    section="Events end to end",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds the clients send (B)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (B)")
    parser.add_argument("--batch", type=int, default=2_000, help="events per request (B)")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s all clients send together (B; 0: as fast as accepted)",
    )
    parser.add_argument("--workers", type=int, default=harness.DEFAULT_WORKERS, help="API processes (B)")
    parser.add_argument("--anchor-duration", type=float, default=10.0, help="seconds per anchor mode (A)")
    parser.add_argument("--anchor-in-flight", type=int, default=1_000, help="publishes awaiting acks (A)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="most seconds to wait for B")
    parser.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument(
        "--stream-max-bytes",
        type=int,
        default=2 * 1024**3,
        help="SOPHIA_EVENTS_MAX_BYTES of the run's streams",
    )
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.clients, options.batch, options.workers, options.anchor_in_flight) < 1:
        parser.error("--clients, --batch, --workers and --anchor-in-flight must be >= 1")
    if options.rate < 0:
        parser.error("--rate must be >= 0")
    if min(options.duration, options.anchor_duration, options.drain_timeout, options.progress) <= 0:
        parser.error("--duration, --anchor-duration, --drain-timeout and --progress must be > 0")
    return options


def envelope_template(batches: event_load.EventBatches) -> bytes:
    """The envelope the API makes of a benchmark event, with `ID_MARK` where its id goes."""
    line = orjson.loads(batches.next().split(b"\n", 1)[0])
    envelope = Envelope(
        id=ID_MARK.decode(),
        type=line["type"],
        schema_version=1,
        occurred_at=datetime.now(UTC),
        source=line["source"],
        key=line["key"],
        payload=line["payload"],
        trace_id=secrets.token_hex(16),  # the API's request id
    )
    return encode(envelope)


def anchor(
    env: harness.Environment, prefix: str, template: bytes, options: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Side A, both modes, each on a fresh stream configured like Sophia's."""
    results = {}
    for mode, pipelined in (("publish", False), ("publish_async", True)):
        spec = StreamSpec(f"{prefix}anchor-{mode.replace('_', '-')}", max_bytes=options.stream_max_bytes)
        with harness.OtherCpu() as other_cpu:
            measured = harness.run_async(
                harness.publish_rate(
                    env.nats_url,
                    spec,
                    template,
                    duration_s=options.anchor_duration,
                    in_flight=options.anchor_in_flight,
                    pipelined=pipelined,
                )
            )
        results[mode] = {
            **measured.as_dict(),
            "other_cpu": other_cpu.share,
            "per_min": round(measured.per_s * 60),
        }
    return results


@dataclass
class Run:
    """Side B, as measured: the load, when it ran, and the workers' counters and CPU over it."""

    load: event_load.Load
    first_send: float
    sending_s: float
    persisted_while_sending: int
    drain_s: float
    workers_delta: dict[str, float]
    cpu_sending: dict[str, float]
    cpu_draining: dict[str, float]
    other_cpu: float | None
    """Share of the machine's CPU that processes outside the benchmark took while the clients sent."""


async def load_and_drain(
    api: harness.ApiServer,
    workers: harness.WorkersProcess,
    env: harness.Environment,
    options: argparse.Namespace,
) -> Run:
    """Warm up (a few small batches, persisted), then the clients for `--duration`, then the drain."""
    ids = harness.message_ids(time.time_ns() // 1_000_000)
    roots = {"api": api.pid or 0, "workers": workers.pid or 0}
    async with event_load.events_client(api.base_url, env.admin_key, options.clients) as client:
        warmup, warm_batches = event_load.Load(), event_load.EventBatches(WARMUP_BATCH, WARMUP_SOURCE, ids)
        give_up_at = time.monotonic() + WARMUP_S
        await asyncio.gather(
            *(
                event_load.post_batch(client, warm_batches.next(), WARMUP_BATCH, warmup, give_up_at)
                for _ in range(2 * options.clients)
            )
        )
        if await event_load.drain(workers, warmup.accepted, 0, WARMUP_S, options.progress) < warmup.accepted:
            raise RuntimeError(
                f"the warm-up events were not persisted within {WARMUP_S:g} s:\n{workers.log_tail()}"
            )
        before = await workers.metric_sums(event_load.WORKER_SAMPLES)
        baseline = before[event_load.ACKED]
        batches = event_load.EventBatches(options.batch, SOURCE, ids)
        load = event_load.Load()
        reporter = asyncio.create_task(event_load.progress(workers, load, baseline, options.progress))
        try:
            with harness.CpuSplit(roots) as cpu_sending, harness.OtherCpu() as other_cpu:
                first_send = time.time()
                started = time.monotonic()
                await event_load.post_for(
                    client,
                    batches,
                    options.clients,
                    options.duration,
                    load,
                    options.drain_timeout,
                    options.rate,
                )
                sending_s = time.monotonic() - started
                while_sending = await event_load.persisted(workers, baseline)
        finally:
            reporter.cancel()
    with harness.CpuSplit(roots) as cpu_draining:
        started = time.monotonic()
        await event_load.drain(workers, load.accepted, baseline, options.drain_timeout, options.progress)
        drain_s = time.monotonic() - started
    after = await workers.metric_sums(event_load.WORKER_SAMPLES)
    delta = {name.removeprefix("sophia_stream_"): after[name] - before[name] for name in sorted(after)}
    return Run(
        load,
        first_send,
        sending_s,
        while_sending,
        drain_s,
        delta,
        cpu_sending.seconds,
        cpu_draining.seconds,
        other_cpu.share,
    )


async def stored(database_url: str) -> dict[str, Any]:
    """This run's events in PostgreSQL: how many, the last one's `received_at`, and the lag."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await connection.fetchrow(STORED_SQL, SOURCE, timeout=300)
    finally:
        await connection.close(timeout=10)
    assert row is not None  # an aggregate answers one row
    return dict(row)


def summarize(run: Run, stored_events: dict[str, Any], anchors: dict[str, Any]) -> dict[str, Any]:
    """The figures of side B, against the anchor. Persisting time is PostgreSQL's clock (the last
    `received_at`) less this process's at the first send: the same clock, the engines being local."""
    load = run.load
    persisted = stored_events["persisted"]
    last = stored_events["last_received_at"]
    persisting_s = last.timestamp() - run.first_send if last is not None else 0.0
    persisted_per_min = persisted / persisting_s * 60 if persisting_s > 0 else 0.0
    anchor_per_min = max(anchors[mode]["per_min"] for mode in anchors)
    latencies = sorted(load.latencies_ms)
    batch_count = run.workers_delta["batch_size_count"]
    return {
        "sent": load.sent,
        "accepted": load.accepted,
        "accepted_per_min": round(load.accepted / run.sending_s * 60) if run.sending_s > 0 else 0,
        "persisted": persisted,
        "persisted_per_min": round(persisted_per_min),
        "persisted_while_sending_per_min": round(run.persisted_while_sending / run.sending_s * 60),
        "persisted_equals_accepted": persisted == load.accepted,
        "sending_s": round(run.sending_s, 3),
        "persisting_s": round(persisting_s, 3),
        "drain_s": round(run.drain_s, 3),
        "requests": load.requests,
        "refused_503": load.refused,
        "request_p50_ms": round(harness.percentile(latencies, 0.5), 2) if latencies else None,
        "request_p99_ms": round(harness.percentile(latencies, 0.99), 2) if latencies else None,
        "lag_p50_ms": round(stored_events["p50_ms"], 1) if persisted else None,
        "lag_p99_ms": round(stored_events["p99_ms"], 1) if persisted else None,
        "lag_max_ms": round(stored_events["max_ms"], 1) if persisted else None,
        "anchor_per_min": anchor_per_min,
        "ratio": round(persisted_per_min / anchor_per_min, 3) if anchor_per_min else 0.0,
        "goal_per_min": GOAL_PER_MIN,
        "goal_met": persisted == load.accepted and persisted_per_min >= GOAL_PER_MIN,
        "cpu_us_per_event": cpu_per_event(run, persisted),
        "workers": {
            **{name: round(value, 3) for name, value in run.workers_delta.items()},
            "mean_batch": round(run.workers_delta["batch_size_sum"] / batch_count, 1) if batch_count else 0,
            "mean_sink_ms": round(run.workers_delta["processing_seconds_sum"] / batch_count * 1000, 2)
            if batch_count
            else 0,
        },
        "other_cpu": run.other_cpu,
        "cpu_s_sending": run.cpu_sending,
        "cpu_s_draining": run.cpu_draining,
    }


def cpu_per_event(run: Run, persisted: int) -> float | None:
    """µs of CPU the pipeline's four components spent an event persisted, sending and draining."""
    spent = sum(
        window.get(name, 0.0)
        for window in (run.cpu_sending, run.cpu_draining)
        for name in PIPELINE_COMPONENTS
    )
    return round(spent / persisted * 1e6, 1) if persisted else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        prefix = f"bench{os.getpid()}-{secrets.token_hex(3)}-"
        template = envelope_template(event_load.EventBatches(1, SOURCE, harness.message_ids(0)))
        extra_env = {
            "SOPHIA_EVENTS_STREAM_PREFIX": prefix,
            "SOPHIA_EVENTS_MAX_BYTES": str(options.stream_max_bytes),
        }
        try:
            anchors = anchor(env, prefix, template, options)
            with (
                harness.WorkersProcess(env, extra_env=extra_env) as workers,
                harness.ApiServer(env, workers=options.workers, extra_env=extra_env) as api,
            ):
                harness.run_async(harness.consumer_exists(env.nats_url, f"{prefix}user-events", CONSUMER, 60))
                run = harness.run_async(load_and_drain(api, workers, env, options))
        finally:
            harness.run_async(harness.delete_streams(env.nats_url, prefix))
        stored_events = harness.run_async(stored(env.database_url))
        event_bytes = len(event_load.EventBatches(1, SOURCE, harness.message_ids(0)).next())
        result = {
            "benchmark": "events",
            "duration_s": options.duration,
            "clients": options.clients,
            "batch": options.batch,
            "rate_per_s": options.rate,
            "api_workers": options.workers,
            "event_line_bytes": event_bytes,
            "envelope_bytes": len(template),
            "anchor": anchors,
            "anchor_in_flight": options.anchor_in_flight,
            **summarize(run, stored_events, anchors),
            "machine": harness.machine(env),
        }
    harness.emit(result, report(result), options, HEADLINE)
    return result


def report(result: dict[str, Any]) -> str:
    r, anchors, workers = result, result["anchor"], result["workers"]
    mismatch = f"  !!! persisted {r['persisted']:,} != accepted {r['accepted']:,} !!!"
    lines = [
        f"events end to end for {r['duration_s']:g} s: {r['clients']} clients x {r['batch']:,}-event NDJSON "
        f"batches ({r['event_line_bytes']} bytes a line, {r['envelope_bytes']}-byte envelopes)"
        + (f" at {r['rate_per_s']:,.0f} events/s" if r["rate_per_s"] else ", as fast as accepted")
        + f", API granian x{r['api_workers']}, one workers process",
        *(
            f"  A raw nats-py {label:<44}{anchors[mode]['per_s']:>9,.0f} ev/s"
            f" = {anchors[mode]['per_min']:>10,}/min"
            for mode, label in (
                ("publish", f"js.publish, {r['anchor_in_flight']:,} awaited at once"),
                ("publish_async", f"js.publish_async, {r['anchor_in_flight']:,} acks pending"),
            )
        ),
        f"  B accepted (202)  {r['accepted']:>11,} events = {r['accepted_per_min']:>10,}/min; requests "
        f"p50 {r['request_p50_ms']} ms, p99 {r['request_p99_ms']} ms; 503s {r['refused_503']}",
        f"  B persisted       {r['persisted']:>11,} events = {r['persisted_per_min']:>10,}/min over "
        f"{r['persisting_s']:.1f} s from the first send ({r['persisted_while_sending_per_min']:,}/min "
        f"while sending; drained {r['drain_s']:.1f} s after the last send)",
        f"  lag received_at - occurred_at: p50 {r['lag_p50_ms']} ms, p99 {r['lag_p99_ms']} ms, "
        f"max {r['lag_max_ms']} ms",
        "  persisted == accepted: yes" if r["persisted_equals_accepted"] else mismatch,
        f"  ratio B persisted / A best {r['ratio']:.3f}; goal >= {GOAL_PER_MIN:,}/min end to end: "
        + ("met" if r["goal_met"] else "NOT met"),
        f"  CPU-s while sending: {cpu_text(r['cpu_s_sending'])}; others took {r['other_cpu']:.0%} of CPU",
        f"  CPU-s while draining: {cpu_text(r['cpu_s_draining'])}",
        f"  CPU an event (API, workers, NATS, PostgreSQL): {r['cpu_us_per_event']} µs; "
        + f"goal <= {GOAL_CPU_US}: "
        + ("met" if (r["cpu_us_per_event"] or GOAL_CPU_US + 1) <= GOAL_CPU_US else "NOT met"),
        f"  workers: mean micro-batch {workers['mean_batch']} messages, "
        + f"mean sink {workers['mean_sink_ms']} ms",
    ]
    return "\n".join(lines)


def cpu_text(seconds: dict[str, float]) -> str:
    shown = [f"{label} {value:.1f}" for label, value in seconds.items() if value >= 0.05]
    return ", ".join(shown) or "none"


def stop_on_sigterm(signal_number: int, frame: object) -> None:
    raise SystemExit(128 + signal_number)  # so the child processes and the streams are cleaned up


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    outcome = main()
    sys.exit(0 if outcome["persisted_equals_accepted"] else 1)
