"""Deal stage changes written to the catalog at a fixed rate, and the time until the analytics
summaries hold each of them.

The writer moves open deals one stage on (the last open stage closes them, won or lost), in bulk
batches through `sophia.database.ingest.bulk_upsert`, the merge `POST /api/v1/records:bulk` runs
(catalog, stage-history trigger and outbox events in one transaction). A watcher polls
`sophia_analytics.deal_facts` for a sample of the changes: a change is in the summaries once its
deal's facts were read at the version it wrote (the consumer writes facts and summaries in one
transaction). Lag = when the watcher first saw it - when the writer's commit returned.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from harness.analytics_data import OPEN_STAGES
from harness.cpu import process_cpu_s
from sophia.database.ingest import COPY_HEADER, COPY_TRAILER, bulk_upsert, copy_row

POLL_S = 0.05
"""How often the watcher looks: a lag is read up to this late (so never shorter than it was), and
each look costs PostgreSQL about as much whatever it asks (a wake, a round trip, a plan)."""
WATCHED = 64
"""The oldest sampled changes each poll looks for: with a backlog, looking for every pending one
(3,000 ids 50 times a second at 5,000 changes/s) took a third of a PostgreSQL backend, on the
cores the path measured needs, and 256 of them (every 10th change sampled) still 17–19 µs of
PostgreSQL's CPU a change at 7,500 a second, 6 % of the whole path's. The summaries take changes
about in commit order (a batch of 1,000 holds 25 samples at the default `--lag-sample`), so a newer
one is seldom done before the 64 older ones, and its lag is read when they are."""


@dataclass
class Deal:
    id: UUID
    external_id: str
    version: int
    data: dict[str, Any]


def advance(deal: Deal, rng: random.Random) -> None:
    """The deal one stage on, its version as the catalog will number it."""
    stage = deal.data["dealstage"]
    index = OPEN_STAGES.index(stage)
    if index + 1 < len(OPEN_STAGES):
        deal.data["dealstage"] = OPEN_STAGES[index + 1]
    else:
        deal.data["dealstage"] = "closedwon" if rng.random() < 0.45 else "closedlost"
        deal.data["closedate"] = datetime.now(UTC).date().isoformat()
    deal.version += 1


async def open_deals(connection: asyncpg.Connection, count: int) -> list[Deal]:
    """Up to `count` open deals (in the default funnel), in a random order."""
    rows = await connection.fetch(
        "SELECT id, external_id, version, data::text AS data FROM sophia_core.unified_data_catalog "
        "WHERE kind = 'deal' AND data ->> 'dealstage' = ANY($1::text[]) ORDER BY random() LIMIT $2",
        list(OPEN_STAGES),
        count,
        timeout=600,
    )
    return [Deal(row["id"], row["external_id"], row["version"], orjson.loads(row["data"])) for row in rows]


@dataclass
class Flow:
    """What the writer and the watcher saw."""

    written: int = 0
    batches: int = 0
    batch_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    pending: dict[UUID, tuple[int, float]] = field(default_factory=dict)
    """Sampled changes not yet seen in the summaries: deal -> (version written, commit time)."""
    expected: dict[UUID, int] = field(default_factory=dict)
    """Every deal changed -> the last version written."""
    first_write: float = 0.0
    last_commit: float = 0.0
    last_seen: float = 0.0
    lookup_cpu_s: float = 0.0
    """PostgreSQL's CPU for the watcher's and the drain check's lookups: the measurement's own cost,
    counted in PostgreSQL's share of the whole path."""


async def _closed(connection: asyncpg.Connection, flow: Flow) -> None:
    """Close a lookup connection, its backend's CPU added to `flow.lookup_cpu_s`."""
    seconds = process_cpu_s(connection.get_server_pid())
    flow.lookup_cpu_s += seconds or 0.0
    await connection.close(timeout=10)


def spool(deals: list[Deal]) -> io.BytesIO:
    parts = [COPY_HEADER]
    for line, deal in enumerate(deals, 1):
        raw = orjson.dumps({"data": deal.data}).decode()
        parts.append(copy_row((line, "hubspot", "deal", deal.external_id, raw, None)))
    parts.append(COPY_TRAILER)
    return io.BytesIO(b"".join(parts))


async def write(
    database_url: str,
    deals: list[Deal],
    flow: Flow,
    *,
    rate: float,
    duration_s: float,
    batch: int,
    writers: int,
    sample_every: int,
) -> float:
    """`writers` connections together writing `rate` changes a second in batches of `batch` (each
    writer on a fixed schedule; one behind it writes back to back) for `duration_s`, and no batch
    is begun after that; the seconds it took."""
    rng = random.Random(5)
    pool = [deal for deal in deals]
    interval_s = writers * batch / rate
    started = time.perf_counter()
    flow.first_write = started
    deadline = started + duration_s
    counter = [0]

    def next_batch() -> list[Deal]:
        chosen: list[Deal] = []
        seen: set[UUID] = set()
        while len(chosen) < batch and pool:
            position = counter[0] % len(pool)
            deal = pool[position]
            counter[0] += 1
            if deal.id in seen:
                break
            seen.add(deal.id)
            advance(deal, rng)
            if deal.data["dealstage"] not in OPEN_STAGES:  # closed: not moved again
                # The last deal takes its place: `pool.remove` compared the deals field by field
                # through the whole pool, and took half of this process's CPU, the lag watcher's
                # loop included, in the whole path.
                pool[position] = pool[-1]
                pool.pop()
            chosen.append(deal)
        return chosen

    async def writer(index: int) -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            sent = 0
            while True:
                due = started + (index / writers + sent) * interval_s
                if due >= deadline or time.perf_counter() >= deadline:
                    return  # behind schedule: what was not written by the deadline is not written
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                chosen = next_batch()
                if not chosen:
                    raise RuntimeError(
                        "no open deal left to move: give --deals more or --ingest-duration less"
                    )
                versions = [(deal.id, deal.version) for deal in chosen]
                begun = time.perf_counter()
                await bulk_upsert(connection, spool(chosen), len(chosen), timeout_s=120)
                committed = time.perf_counter()
                flow.batch_ms.append((committed - begun) * 1000)
                flow.last_commit = committed
                for position, (deal_id, version) in enumerate(versions):
                    flow.expected[deal_id] = version
                    if (flow.written + position) % sample_every == 0:
                        flow.pending[deal_id] = (version, committed)
                flow.written += len(chosen)
                flow.batches += 1
                sent += 1
        finally:
            await connection.close(timeout=10)

    await asyncio.gather(*(writer(index) for index in range(writers)))
    return time.perf_counter() - started


async def watch(database_url: str, flow: Flow, stop: asyncio.Event) -> None:
    """Poll the summaries' facts for the sampled changes (the `WATCHED` oldest still pending) until
    `stop`, then until none is pending."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        while not (stop.is_set() and not flow.pending):
            if flow.pending:
                ids = list(itertools.islice(flow.pending, WATCHED))  # in commit order
                rows = await connection.fetch(
                    "SELECT deal_id, version FROM sophia_analytics.deal_facts "
                    "WHERE deal_id = ANY($1::uuid[])",
                    ids,
                    timeout=60,
                )
                now = time.perf_counter()
                for row in rows:
                    wanted = flow.pending.get(row["deal_id"])
                    if wanted is not None and row["version"] >= wanted[0]:
                        flow.lags_ms.append((now - wanted[1]) * 1000)
                        del flow.pending[row["deal_id"]]
            await asyncio.sleep(POLL_S)
    finally:
        await _closed(connection, flow)


async def all_applied(database_url: str, flow: Flow, timeout_s: float, every_s: float) -> bool:
    """Wait until the summaries hold every change written (each deal at its last version).

    Each poll asks only about the deals not yet seen at their last version. Asking about every deal
    written, every 50 ms (73,500 of them after 10 s at 7,500 a second), kept a PostgreSQL backend
    busy through the very drain it timed, on the cores the consumer needs."""
    connection = await asyncpg.connect(database_url, timeout=10)
    started = time.monotonic()
    next_line = started + every_s
    remaining = dict(flow.expected)
    try:
        while True:
            ids = list(remaining)
            done = await connection.fetch(
                "SELECT w.deal_id FROM unnest($1::uuid[], $2::bigint[]) AS w(deal_id, version) "
                "JOIN sophia_analytics.deal_facts AS f USING (deal_id) WHERE f.version >= w.version",
                ids,
                [remaining[deal_id] for deal_id in ids],
                timeout=120,
            )
            for row in done:
                del remaining[row[0]]
            now = time.monotonic()
            if not remaining:
                flow.last_seen = time.perf_counter()
                return True
            if now - started > timeout_s:
                return False
            if now >= next_line:
                next_line += every_s
                print(
                    f"  applying: {len(flow.expected) - len(remaining):,} of {len(flow.expected):,} "
                    "deals in the summaries",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(0.05)
    finally:
        await _closed(connection, flow)
