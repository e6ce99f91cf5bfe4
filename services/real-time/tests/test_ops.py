"""The `ops` channel: the service's own figures every interval to admin clients while one listens,
nothing to resume from, and a ticker that ends with the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import orjson
import pytest
from metrics import sample
from realtime_clients import frame, publications, subscribe, ws

from sophia.realtime.service import RealtimeService

INTERVAL_S = 0.02


@pytest.fixture
async def realtime(own_streams) -> AsyncIterator[RealtimeService]:
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_ops_interval_s": INTERVAL_S})
    async with RealtimeService(settings) as service:
        yield service


async def test_a_read_key_may_not_subscribe_to_ops(realtime, api_keys):
    async with ws(realtime, api_keys["read"]) as client:
        await client.send(orjson.dumps({"op": "subscribe", "id": 4, "channel": "ops"}).decode())
        answer = await frame(client)
    assert answer == {
        "type": "error",
        "id": 4,
        "code": "forbidden",
        "detail": "Channel 'ops' needs a key with the 'admin' scope; this key has 'read'.",
    }


async def test_an_admin_client_gets_the_services_figures_every_interval_in_order(realtime, api_keys):
    async with ws(realtime, api_keys["admin"]) as admin, ws(realtime, api_keys["read"]) as reader:
        await subscribe(reader, "records")
        subscribed = await subscribe(admin, "ops")
        ticks = await publications(admin, 3)
    position = subscribed["position"]
    assert position["epoch"].startswith("ops-")
    assert position["seq"] == 0  # nobody listened before: no tick was made
    assert [tick["position"] for tick in ticks] == [{"epoch": position["epoch"], "seq": n} for n in (1, 2, 3)]
    assert {tick["channel"] for tick in ticks} == {"ops"}
    events = [tick["event"] for tick in ticks]
    assert {event["type"] for event in events} == {"ops.tick"}
    assert all(datetime.fromisoformat(event["occurred_at"]).tzinfo for event in events)
    figures = [event["payload"] for event in events]
    assert figures[-1]["connections"] == 2
    assert figures[-1]["subscriptions"] == {"ops": 1, "records": 1}
    assert figures[-1]["slow_consumers_total"] == sample("sophia_realtime_slow_consumers_total")
    frames = [figure["frames_total"] for figure in figures]
    sent = [figure["bytes_total"] for figure in figures]
    assert frames == sorted(set(frames))  # each tick is counted by the next
    assert sent == sorted(set(sent))


async def test_a_resume_on_ops_is_answered_not_recovered_and_live_ticks_follow(realtime, api_keys):
    async with ws(realtime, api_keys["admin"]) as client:
        await subscribe(client, "ops")
        [seen] = await publications(client, 1)
    async with ws(realtime, api_keys["admin"]) as client:
        resumed = await subscribe(client, "ops", since=seen["position"])
        [live] = await publications(client, 1)
    assert resumed["recovered"] is False
    assert resumed["reason"] == (
        "Not resumed: the ops channel keeps no history. Read the current state again; live events follow."
    )
    assert resumed["position"]["epoch"] == seen["position"]["epoch"]
    assert resumed["position"]["seq"] >= seen["position"]["seq"]
    assert live["position"]["seq"] == resumed["position"]["seq"] + 1


async def test_the_ticker_stops_with_the_server(own_streams, api_keys):
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_ops_interval_s": INTERVAL_S})
    async with RealtimeService(settings) as service:
        name = f"realtime {service.server.ops.epoch}"
        [ticker] = [task for task in asyncio.all_tasks() if task.get_name() == name]
        async with ws(service, api_keys["admin"]) as client:
            await subscribe(client, "ops")
            await publications(client, 1)
        assert not ticker.done()
    assert ticker.cancelled()  # cancelled, and awaited before the service was left
