"""Raw nats-py JetStream publishing, the anchor of the events benchmark, and removing a run's streams.

No Sophia code between the client and NATS: one nats-py connection, a stream configured like
Sophia's (`StreamSpec`: file storage, partitioned subjects, duplicate window), one event a message,
each with its own `Nats-Msg-Id`: what a client publishing each event with nats-py does, and what
the API did before it packed a subject's events several to a message (docs/decisions/0006).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck

from harness.measure import Measurement
from sophia.events.streams import StreamSpec

ID_MARK = b"00000000-0000-7000-8000-000000000000"
"""Where a template message carries its id: each message replaces it with one of its own."""
KEYS = 1_000


def message_ids(run: int) -> Iterator[bytes]:
    """Distinct UUIDv7-shaped ids (as bytes), never repeated within a run."""
    head = f"{run & 0xFFFFFFFFFFFF:012x}"
    head = f"{head[:8]}-{head[8:]}-7000"
    for counter in itertools.count():
        variant = 0x8000 | (counter >> 48) & 0x3FFF
        yield f"{head}-{variant:04x}-{counter & 0xFFFFFFFFFFFF:012x}".encode()


async def _connect(nats_url: str) -> Client:
    servers = [url.strip() for url in nats_url.split(",") if url.strip()]
    return await nats.connect(servers=servers, name="sophia-bench", connect_timeout=5)


async def publish_rate(
    nats_url: str,
    spec: StreamSpec,
    template: bytes,
    *,
    duration_s: float,
    in_flight: int,
    pipelined: bool,
) -> Measurement:
    """Messages a second JetStream acknowledged, publishing `template` (its `ID_MARK` replaced by a
    fresh id) for `duration_s` to `spec`'s stream, created for the run and deleted after it.

    `pipelined` False: `in_flight` tasks each awaiting `js.publish` (a request per message, as
    Sophia's publisher does). True: `js.publish_async` with at most `in_flight` acks pending."""
    if ID_MARK not in template:
        raise ValueError("the template has no id mark")
    prefix, suffix = template.split(ID_MARK, 1)
    subjects = [spec.subject(f"u-{index}", "user.event") for index in range(KEYS)]
    client = await _connect(nats_url)
    try:
        js = client.jetstream(publish_async_max_pending=in_flight)
        await js.add_stream(spec.config())
        ids = message_ids(time.time_ns() // 1_000_000)
        publish = _pipelined if pipelined else _awaited
        started = time.perf_counter()
        acked, errors = await publish(js, spec.name, subjects, (prefix, suffix), ids, duration_s, in_flight)
        seconds = time.perf_counter() - started
        await js.delete_stream(spec.name)
    finally:
        await client.close()
    return Measurement(acked, seconds, errors=errors)


async def _awaited(
    js: JetStreamContext,
    stream: str,
    subjects: list[str],
    parts: tuple[bytes, bytes],
    ids: Iterator[bytes],
    duration_s: float,
    in_flight: int,
) -> tuple[int, int]:
    deadline = time.perf_counter() + duration_s
    counts = [0, 0]

    async def publisher(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            message_id = next(ids)
            try:
                await js.publish(
                    subjects[index % KEYS],
                    parts[0] + message_id + parts[1],
                    stream=stream,
                    headers={"Nats-Msg-Id": message_id.decode()},
                )
                counts[0] += 1
            except (NatsError, TimeoutError):  # counted: the anchor reports its errors
                counts[1] += 1
            index += in_flight

    await asyncio.gather(*(publisher(offset) for offset in range(in_flight)))
    return counts[0], counts[1]


async def _pipelined(
    js: JetStreamContext,
    stream: str,
    subjects: list[str],
    parts: tuple[bytes, bytes],
    ids: Iterator[bytes],
    duration_s: float,
    in_flight: int,
) -> tuple[int, int]:
    deadline = time.perf_counter() + duration_s
    counts = [0, 0]

    def done(future: asyncio.Future[PubAck]) -> None:
        counts[0 if not future.cancelled() and future.exception() is None else 1] += 1

    index = 0
    while time.perf_counter() < deadline:
        message_id = next(ids)
        future = await js.publish_async(
            subjects[index % KEYS],
            parts[0] + message_id + parts[1],
            stream=stream,
            headers={"Nats-Msg-Id": message_id.decode()},
        )
        future.add_done_callback(done)
        index += 1
    await js.publish_async_completed()
    return counts[0], counts[1]


async def delete_streams(nats_url: str, prefix: str) -> list[str]:
    """Delete every stream whose name starts with `prefix` (a run's own); the names deleted."""
    if not prefix:
        raise ValueError("refusing to delete every stream: give a run's prefix")
    client = await _connect(nats_url)
    try:
        js = client.jetstream()
        names = [info.config.name for info in await js.streams_info()]
        deleted = [name for name in names if name and name.startswith(prefix)]
        for name in deleted:
            await js.delete_stream(name)
    finally:
        await client.close()
    return deleted


async def consumer_exists(nats_url: str, stream: str, consumer: str, timeout_s: float) -> None:
    """Wait until `consumer` exists on `stream` (a process creates it at start), or `TimeoutError`."""
    client = await _connect(nats_url)
    try:
        js = client.jetstream()
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    await js.consumer_info(stream, consumer)
                    return
                except nats.js.errors.NotFoundError:
                    await asyncio.sleep(0.2)
    finally:
        await client.close()
