"""Load on the real-time path: stamped system events posted to `POST /api/v1/events`, a probe
client that tells how many have come through, and a resume timed from far behind."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

SOURCE = "bench"
RESUME_BATCH = 1_000
TIMEOUT_S = 30.0


def events_client(base_url: str, key: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(TIMEOUT_S, connect=5.0),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
    )


def stamped_events(count: int) -> bytes:
    """`count` system events whose payload holds the `time.time_ns()` of now as `stamp_ns`."""
    stamp = time.time_ns()
    return orjson.dumps(
        [
            {
                "type": "system.event",
                "source": SOURCE,
                "key": f"tick-{index % 16}",
                "payload": {"name": "bench.tick", "attributes": {"stamp_ns": stamp}},
            }
            for index in range(count)
        ]
    )


@dataclass
class Posted:
    """What a driver posted: events accepted, failed requests, how late the schedule ran."""

    events: int = 0
    errors: int = 0
    first_error: str | None = None
    max_late_s: float = 0.0


async def post(client: httpx.AsyncClient, count: int, posted: Posted) -> None:
    """`count` stamped events in one request; a failure is counted, not raised (the window goes on)."""
    try:
        response = await client.post("/api/v1/events", content=stamped_events(count))
    except httpx.HTTPError as failed:
        error = f"{type(failed).__name__}: {failed}"
    else:
        if response.status_code == 202:
            posted.events += count
            return
        error = f"{response.status_code}: {response.text[:300]}"
    posted.errors += 1
    posted.first_error = posted.first_error or error


class Probe:
    """One subscriber in this process, counting publications: how far the fan-out has come."""

    def __init__(self, url: str, headers: dict[str, str], channel: str) -> None:
        self.url = url
        self.headers = headers
        self.channel = channel
        self.received = 0
        self.closed: str | None = None
        self._advanced = asyncio.Event()
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probe:
        self._connection, _ = await subscribe(self.url, self.headers, self.channel)
        self._reader = asyncio.create_task(self._read(self._connection))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            with suppress(WebSocketException, OSError, TimeoutError):
                await asyncio.wait_for(self._connection.close(), 10)
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, connection: ClientConnection) -> None:
        try:
            async for message in connection:
                if str(message).startswith('{"type":"publication"'):
                    self.received += 1
                    self._advanced.set()
        except ConnectionClosed:
            pass
        self.closed = f"closed {connection.close_code} {connection.close_reason!r}"
        self._advanced.set()

    async def advanced(self, timeout_s: float) -> None:
        """Return once a publication arrived (or `timeout_s` passed)."""
        self._advanced.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._advanced.wait(), timeout_s)


async def subscribe(url: str, headers: dict[str, str], channel: str) -> tuple[ClientConnection, Any]:
    """A connection subscribed to `channel`, and the `subscribed` answer (where the channel stands)."""
    connection = await connect(
        url, additional_headers=headers, compression=None, open_timeout=10, max_size=None
    )
    await connection.send(json.dumps({"op": "subscribe", "id": 1, "channel": channel}))
    answer = json.loads(await asyncio.wait_for(connection.recv(), 10))
    if answer.get("type") != "subscribed":
        await connection.close()
        raise RuntimeError(f"subscribe was answered {answer}")
    return connection, answer


async def closed_loop(
    client: httpx.AsyncClient, probe: Probe, posted: Posted, in_flight: int, stop: asyncio.Event
) -> None:
    """Post events as fast as they come through, with at most `in_flight` not yet at the probe."""
    base = probe.received
    while not stop.is_set() and probe.closed is None:
        room = in_flight - (posted.events - (probe.received - base))
        if room <= 0:
            await probe.advanced(timeout_s=1.0)
            continue
        await post(client, room, posted)


async def fixed_rate(client: httpx.AsyncClient, posted: Posted, per_s: float, stop: asyncio.Event) -> None:
    """One event a request, `per_s` a second on a fixed schedule (not faster after falling behind)."""
    started = time.monotonic()
    requests: set[asyncio.Task[None]] = set()
    index = 0
    while not stop.is_set():
        wait_s = started + index / per_s - time.monotonic()
        if wait_s > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
            continue
        posted.max_late_s = max(posted.max_late_s, -wait_s)
        request = asyncio.create_task(post(client, 1, posted))
        requests.add(request)
        request.add_done_callback(requests.discard)
        index += 1
    if requests:
        await asyncio.wait(requests, timeout=TIMEOUT_S)


async def resume(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], channel: str, events_back: int
) -> dict[str, Any]:
    """Post `events_back` events, then subscribe with `since` that many back: replayed per second.

    Positions are opaque (they count a message's events apart, and skip between messages), so the
    position before the history is the one a subscription is answered with before it is posted,
    and the history's end is the last of it that arrives live."""
    connection, answer = await subscribe(url, headers, channel)
    since = answer["position"]  # where the channel stands before the history
    result: dict[str, Any] = {"events_back": events_back, "received": 0, "recovered": None, "error": None}
    started = time.perf_counter()
    try:
        posted = Posted()
        for start in range(0, events_back, RESUME_BATCH):
            await post(client, min(RESUME_BATCH, events_back - start), posted)
        if posted.errors:
            raise RuntimeError(f"posting the history failed: {posted.first_error}")
        live = 0
        async with asyncio.timeout(TIMEOUT_S + events_back / 1000):
            while live < events_back:
                frame = orjson.loads(await connection.recv())
                if frame.get("type") == "publication":
                    live, position = live + 1, frame["position"]  # the history's last, in the end
        await connection.send(json.dumps({"op": "unsubscribe", "id": 2, "channel": channel}))
        await asyncio.wait_for(connection.recv(), 10)
        started = time.perf_counter()
        await connection.send(json.dumps({"op": "subscribe", "id": 3, "channel": channel, "since": since}))
        async with asyncio.timeout(TIMEOUT_S + events_back / 1000):
            async for message in connection:
                frame = orjson.loads(message)
                if frame.get("type") == "subscribed":
                    result["recovered"] = frame.get("recovered")
                    if not frame.get("recovered"):
                        result["error"] = frame.get("reason")
                        break
                elif frame.get("type") == "publication":
                    result["received"] += 1
                    if frame["position"]["seq"] >= position["seq"]:
                        break
                elif frame.get("type") == "error":
                    result["error"] = f"{frame['code']}: {frame['detail']}"
                    break
            else:
                result["error"] = f"closed {connection.close_code} {connection.close_reason!r}"
    except TimeoutError:
        result["error"] = f"timed out after {result['received']:,} publications"
    except ConnectionClosed as closed:
        result["error"] = f"closed: {closed}"
    finally:
        with suppress(WebSocketException, OSError, TimeoutError):
            await asyncio.wait_for(connection.close(), 10)
    seconds = time.perf_counter() - started
    result["seconds"] = round(seconds, 3)
    result["per_s"] = round(result["received"] / seconds, 1) if seconds > 0 else 0.0
    return result
