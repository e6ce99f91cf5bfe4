"""The outbox drained after a NATS outage: the relay's rate at the start of a backlog against its end.

    .venv/bin/python bench/relay_drain.py [--rows 2000000] [--batch 500] [--json]

A backlog of `--rows` catalog events is written straight into the outbox (what piles up while NATS
is away and the catalog takes writes), then one relay publishes it to JetStream. Side A is the
relay's rate over the last fifth of the backlog, when little is left; side B its rate over the
first fifth, with the whole backlog waiting. A relay whose cost grows with the backlog (a count of
the outbox after every batch, as it once had) is slowest at the start: B/A well under 1. The goal
is a flat drain, B/A >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from typing import Any

import harness
from prometheus_client import REGISTRY

from sophia.database import Database
from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs
from sophia.shared.settings import Settings
from sophia.workers.relay import OutboxRelay

GOAL = 0.8
SAMPLE_S = 0.2
DEADLINE_S_PER_ROW = 0.001
"""A relay slower than 1,000 events/s has failed: give up rather than wait for ever."""


HEADLINE = harness.Headline(
    anchor="the relay over the backlog's last fifth",
    subject="over its first fifth, the whole backlog waiting",
    a=harness.Figure("end_per_s", "events/s"),
    b=harness.Figure("start_per_s", "events/s"),
    goals=(harness.Goal(f"B/A ≥ {GOAL}", at_least=GOAL),),
    section="Outbox drain after an outage",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="outbox events waiting at the start")
    parser.add_argument("--batch", type=int, default=500, help="events the relay publishes per batch")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.rows, options.batch) < 1:
        parser.error("--rows and --batch must be >= 1")
    return options


def relayed() -> float:
    """Catalog events the relay has published (the counter is labelled by the outbox's topic)."""
    return REGISTRY.get_sample_value("sophia_outbox_relayed_total", {"stream": "records"}) or 0.0


async def fill_outbox(database: Database, rows: int) -> None:
    async with database.connection() as connection:
        await connection.execute(
            """INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
               SELECT 'records', 'record.upserted', 'bench/deal/' || n,
                      jsonb_build_object('id', gen_random_uuid(), 'source_system', 'bench',
                                         'kind', 'deal', 'external_id', n::text, 'version', 1)
               FROM generate_series(1, $1) AS n""",
            rows,
            timeout=3600,
        )


def rate_between(samples: list[tuple[float, float]], low: float, high: float) -> float:
    """Events per second while the count relayed went from `low` to `high` (interpolated)."""

    def when(count: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if c0 <= count <= c1:
                return t0 if c1 == c0 else t0 + (t1 - t0) * (count - c0) / (c1 - c0)
        return samples[-1][0]

    return (high - low) / max(when(high) - when(low), 1e-9)


async def drain(env: harness.Environment, options: argparse.Namespace) -> dict[str, Any]:
    prefix = f"drain{os.getpid()}-"
    settings = Settings(
        database_url=env.database_url,
        redis_url=env.redis_url,
        nats_url=env.nats_url,
        events_stream_prefix=prefix,
        events_max_bytes=max(64 * 1024 * 1024, options.rows * 600),
    )
    specs = stream_specs(settings)
    try:
        async with Database(settings) as database, NatsConnection(env.nats_url) as nats:
            await fill_outbox(database, options.rows)
            start = relayed()
            samples: list[tuple[float, float]] = []
            stop = asyncio.Event()
            began = time.perf_counter()
            async with OutboxRelay(database, nats, specs, batch=options.batch) as relay:
                task = asyncio.create_task(relay.run(stop))
                deadline = began + DEADLINE_S_PER_ROW * options.rows + 60
                while (done := relayed() - start) < options.rows:
                    samples.append((time.perf_counter() - began, done))
                    if task.done():
                        task.result()  # the relay failed: say why
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"the relay published {done:,.0f} of {options.rows:,} events")
                    await asyncio.sleep(SAMPLE_S)
                samples.append((time.perf_counter() - began, relayed() - start))
                stop.set()
                await task
    finally:
        await harness.delete_streams(env.nats_url, prefix)
    fifth = options.rows / 5
    start_rate = rate_between(samples, 0, fifth)
    end_rate = rate_between(samples, options.rows - fifth, options.rows)
    return {
        "rows": options.rows,
        "seconds": samples[-1][0],
        "start_per_s": start_rate,
        "end_per_s": end_rate,
        "ratio": start_rate / end_rate,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        measured = harness.run_async(drain(env, options))
        result = {"benchmark": "relay_drain", **measured, "goal": GOAL, "machine": harness.machine(env)}
    text = (
        f"outbox drain of {measured['rows']:,} events after an outage, "
        f"one relay, batches of {options.batch}\n"
        f"  A last fifth   {measured['end_per_s']:>10,.0f} events/s\n"
        f"  B first fifth  {measured['start_per_s']:>10,.0f} events/s  (the whole backlog waiting)\n"
        f"  ratio B/A {measured['ratio']:.2f} (goal >= {GOAL}); {measured['seconds']:.1f} s in all"
    )
    harness.emit(result, text, options, HEADLINE)
    return result


if __name__ == "__main__":
    main()
