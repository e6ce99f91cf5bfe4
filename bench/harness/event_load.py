"""Load on `POST /api/v1/events`: NDJSON batches of user events, sent by concurrent clients that
retry a 503 as a client should, and what the workers say they have persisted meanwhile."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson

from harness.workers import WorkersProcess

ACKED = "sophia_stream_events_acked_total"
"""Events the stream processors acked, each after its sink committed: persisted events."""
WORKER_SAMPLES = {
    ACKED,
    "sophia_stream_acked_total",
    "sophia_stream_consumed_total",
    "sophia_stream_redelivered_total",
    "sophia_stream_failed_total",
    "sophia_stream_batch_size_sum",
    "sophia_stream_batch_size_count",
    "sophia_stream_processing_seconds_sum",
}
KEYS = 1_000
REQUEST_TIMEOUT_S = 120.0


def event_line(index: int, source: str) -> dict[str, object]:
    """Event `index` of a batch, less its id and `occurred_at` (set when the batch is sent)."""
    user = f"u-{index % KEYS}"
    return {
        "type": "user.event",
        "source": source,
        "key": user,
        "payload": {
            "name": "deal.viewed",
            "user_id": user,
            "properties": {"deal": f"D-{1000 + index % 9000}", "page": f"/deals/{1000 + index % 9000}"},
        },
    }


class EventBatches:
    """NDJSON batches of `size` user events: each event a fresh id from `ids`, `occurred_at` now.

    The constant part of every line is serialized once, so a batch costs the client a join."""

    def __init__(self, size: int, source: str, ids: Iterator[bytes]) -> None:
        self.size = size
        self.ids = ids
        # '{"id":"<id>","occurred_at":"<time>' then the rest of the line, from its first field on
        self.tails = [b'",' + orjson.dumps(event_line(index, source))[1:] + b"\n" for index in range(size)]

    def next(self) -> bytes:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z").encode()
        parts: list[bytes] = []
        for tail in self.tails:
            parts += (b'{"id":"', next(self.ids), b'","occurred_at":"', stamp, tail)
        return b"".join(parts)


@dataclass
class Load:
    """What the clients have done so far."""

    sent: int = 0
    """Events in the batches sent (a batch sent again after a 503 counts once)."""
    accepted: int = 0
    requests: int = 0
    refused: int = 0
    """503 answers (a stream nearly full, or NATS away), each batch then sent again."""
    latencies_ms: list[float] = field(default_factory=list)
    """Of each accepted request."""


def events_client(base_url: str, token: str, clients: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0),
        limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
    )


async def post_batch(
    client: httpx.AsyncClient, body: bytes, size: int, load: Load, give_up_at: float
) -> None:
    """One batch until the API takes it: 202, or 503 and again after Retry-After, the same bytes.

    A 503 past `give_up_at` (monotonic) is an error: a benchmark does not wait for ever."""
    load.sent += size
    while True:
        started = time.perf_counter()
        response = await client.post("/api/v1/events", content=body)
        load.requests += 1
        if response.status_code == 503 and time.monotonic() < give_up_at:
            load.refused += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/v1/events answered {response.status_code}: {response.text[:500]}")
        load.latencies_ms.append((time.perf_counter() - started) * 1000)
        accepted = orjson.loads(response.content)["accepted"]
        if accepted != size:
            raise RuntimeError(f"the API accepted {accepted} of a batch of {size}")
        load.accepted += accepted
        return


async def post_for(
    client: httpx.AsyncClient,
    batches: EventBatches,
    clients: int,
    duration_s: float,
    load: Load,
    retry_s: float,
    rate_per_s: float = 0.0,
) -> None:
    """`clients` tasks, each posting one batch after another, until `duration_s` has passed; a
    refused batch is retried for at most `retry_s` after that. With `rate_per_s` the clients
    together send that many events a second (on a fixed schedule, not faster when they fall
    behind it); without, each sends its next batch as soon as the last one is accepted."""
    started = time.monotonic()
    deadline = started + duration_s
    interval_s = clients * batches.size / rate_per_s if rate_per_s > 0 else 0.0

    async def one_client(index: int) -> None:
        sent = 0
        while time.monotonic() < deadline:
            if interval_s:
                due = started + (index / clients + sent) * interval_s
                if due >= deadline:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await post_batch(client, batches.next(), batches.size, load, deadline + retry_s)
            sent += 1

    await asyncio.gather(*(one_client(index) for index in range(clients)))


async def persisted(workers: WorkersProcess, baseline: float) -> int:
    """Events the processors have acked (so committed) since `baseline` acks."""
    return int((await workers.metric_sums({ACKED}))[ACKED] - baseline)


async def progress(workers: WorkersProcess, load: Load, baseline: float, every_s: float) -> None:
    """A line on stderr every `every_s` while the clients run (cancel it to stop)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        stored = await persisted(workers, baseline)
        elapsed = time.monotonic() - started
        print(
            f"  {elapsed:5.0f} s  accepted {load.accepted:>11,} ({load.accepted / elapsed * 60:>11,.0f}/min)"
            f"  persisted {stored:>11,}  503s {load.refused}",
            file=sys.stderr,
            flush=True,
        )


async def drain(
    workers: WorkersProcess, target: int, baseline: float, timeout_s: float, every_s: float
) -> int:
    """Wait until the processors have acked `target` events since `baseline` (at most `timeout_s`);
    the count acked when it returns."""
    started = time.monotonic()
    next_line = started + every_s
    while True:
        stored = await persisted(workers, baseline)
        now = time.monotonic()
        if stored >= target or now - started > timeout_s:
            return stored
        if now >= next_line:
            next_line += every_s
            print(
                f"  draining {now - started:5.0f} s  persisted {stored:,} of {target:,}",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(0.5)
