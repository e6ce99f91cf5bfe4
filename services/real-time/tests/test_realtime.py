"""The real-time service end to end: real JetStream, a real WebSocket server, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest
from metrics import sample
from realtime_clients import frame, narrow_client, publications, subscribe, ws
from record_events import publish, record_event
from waiting import eventually
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sophia.cache import CacheConfig, RedisConnection, TieredCache
from sophia.core.events import Envelope
from sophia.core.records import RecordKey
from sophia.database import Database, catalog, keys
from sophia.events.codec import PACK_SPAN
from sophia.events.connection import NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.events.streams import stream_specs
from sophia.realtime import feed as feed_module
from sophia.realtime.service import RealtimeService
from sophia.workers.__main__ import CATALOG_FOLLOWERS, processors
from sophia.workers.processor import StreamProcessor
from sophia.workers.relay import OutboxRelay


@pytest.fixture
async def realtime(own_streams) -> AsyncIterator[tuple[RealtimeService, Any]]:
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_queue": 500})
    async with RealtimeService(settings) as service:
        yield service, settings


async def test_a_subscriber_gets_its_channels_events_in_order_with_positions(realtime, api_keys):
    service, settings = realtime
    async with ws(service, api_keys["read"]) as client:
        subscribed = await subscribe(client, "records:crm:deal")
        others = [record_event("erp", "deal", 9)]
        await publish(settings, [record_event("crm", "deal", n) for n in range(3)] + others)
        got = await publications(client, 3)
    assert [item["event"]["payload"]["n"] for item in got] == [0, 1, 2]
    assert {item["channel"] for item in got} == {"records:crm:deal"}
    seqs = [item["position"]["seq"] for item in got]
    assert seqs == sorted(seqs)
    assert seqs[0] > subscribed["position"]["seq"]
    assert {item["position"]["epoch"] for item in got} == {subscribed["position"]["epoch"]}


async def test_the_deals_channel_carries_deal_changes_and_view_refreshes(realtime, api_keys):
    service, settings = realtime
    refreshed = Envelope.new(
        "view.refreshed",
        "view/active_deals_mv",
        {"view": "active_deals_mv", "at": "2026-01-15T09:30:00Z"},
        source="catalog",
    )
    async with ws(service, api_keys["read"]) as deals, ws(service, api_keys["read"]) as records:
        await subscribe(deals, "deals")
        await subscribe(records, "records")
        await publish(settings, [refreshed, record_event("crm", "deal", 1), record_event("crm", "note", 2)])
        on_deals = await publications(deals, 2)
        on_records = await publications(records, 2)
    assert [item["event"]["type"] for item in on_deals] == ["view.refreshed", "record.upserted"]
    assert on_deals[0]["event"]["payload"] == {"view": "active_deals_mv", "at": "2026-01-15T09:30:00Z"}
    assert [item["event"]["payload"]["n"] for item in on_records] == [1, 2]  # no view event on records


async def test_a_deal_written_to_the_catalog_reaches_the_analytics_channel_once_the_summaries_moved(
    own_streams, migrated_database
):
    """A catalog write -> outbox -> relay -> `records` -> the workers' analytics consumer (summaries
    moved, their cache dropped, one `analytics.updated` written) -> relay -> `analytics`, to a read
    client; the consumer lets its own event pass."""
    settings = own_streams.model_copy(update={"database_url": await migrated_database(), "realtime_port": 0})
    records = stream_specs(settings)["records"].name
    async with contextlib.AsyncExitStack() as stack:
        database = await stack.enter_async_context(Database(settings))
        async with database.connection() as connection:
            _, secret = await keys.create(connection, "analytics-reader", "read")
        nats = await stack.enter_async_context(NatsConnection(settings.nats_url or ""))
        redis = await stack.enter_async_context(RedisConnection.from_settings(settings, settings.redis_url))
        cache = await stack.enter_async_context(
            TieredCache(redis.client, CacheConfig.from_settings(settings), name="workers")
        )
        relay = await stack.enter_async_context(
            OutboxRelay(database, nats, stream_specs(settings), poll_s=0.05)
        )
        [configured] = [
            each
            for each in processors(settings, database, nats, cache)
            if each.spec.name == CATALOG_FOLLOWERS
        ]
        # a stop waits for the fetch under way; each hop carries one event, no batch to fill
        quick = replace(configured.spec, idle_wait_s=0.05, batch_wait_s=0.01)
        analyzing = StreamProcessor(
            nats, quick, configured.sink, dead_letter_stream=configured.dead_letter_stream
        )
        service = await stack.enter_async_context(RealtimeService(settings))
        client = await stack.enter_async_context(ws(service, secret))
        await subscribe(client, "analytics")
        stop = asyncio.Event()
        running = asyncio.gather(relay.run(stop), analyzing.run(stop))
        try:
            async with database.connection() as connection:
                deal = {"dealstage": "qualifiedtobuy", "amount": "1200", "pipeline": "default"}
                await catalog.upsert(connection, RecordKey("live", "deal", "d-1"), deal)
            [update] = await publications(client, 1, timeout_s=15)
            js = await nats.jetstream()

            async def own_event_passed() -> bool:
                """Acked by the consumer, and the relay done with the outbox: it deletes a row after its
                publish, which the consumer may ack first; anything the consumer wrote for its own
                event was in the outbox before that ack, so it is on the stream by now."""
                info = await js.consumer_info(records, CATALOG_FOLLOWERS)
                async with database.connection() as connection:
                    pending = await connection.fetchval("SELECT count(*) FROM sophia_core.outbox")
                return info.ack_floor.stream_seq >= update_seq and pending == 0

            update_seq = update["position"]["seq"] // PACK_SPAN  # a position counts events (feed.py)
            await eventually(own_event_passed)
            assert (await js.stream_info(records)).state.last_seq == update_seq
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)
    assert update["channel"] == "analytics"
    event = update["event"]
    assert (event["type"], event["key"]) == ("analytics.updated", "analytics/summaries")
    assert (event["payload"]["deals"], event["payload"]["conversations"]) == (1, 0)
    assert datetime.fromisoformat(event["payload"]["as_of"]) <= datetime.fromisoformat(event["occurred_at"])


@pytest.mark.parametrize("padding", [0, 70_000])  # a length in 16 bits, in 64 (a pong's is in 7)
async def test_publications_of_every_length_arrive_whole(realtime, api_keys, padding):
    service, settings = realtime
    async with ws(service, api_keys["read"]) as client:
        await subscribe(client, "records:crm:note")
        await publish(settings, [record_event("crm", "note", 1, padding=padding)])
        [got] = await publications(client, 1)
    assert got["event"]["payload"]["n"] == 1
    assert len(got["event"]["payload"]["padding"]) == padding


async def test_a_client_resuming_from_its_position_gets_every_missed_event_once_in_order(realtime, api_keys):
    service, settings = realtime
    async with ws(service, api_keys["read"]) as client:
        await subscribe(client, "records:crm")
        await publish(settings, [record_event("crm", "deal", n) for n in range(2)])
        seen = await publications(client, 2)
    last = seen[-1]["position"]
    await publish(settings, [record_event("crm", "call", n) for n in range(2, 6)])  # while it is away
    async with ws(service, api_keys["read"]) as client:
        resumed = await subscribe(client, "records:crm", since=last)
        assert resumed["recovered"] is True
        await publish(settings, [record_event("crm", "deal", n) for n in range(6, 8)])  # live again
        got = await publications(client, 6)
        # and nothing twice: a repeat (of the history, of what was held meanwhile, of the live
        # feed) would come before an event published after all of them, not a guessed while later
        await publish(settings, [record_event("crm", "deal", 8)])
        [later] = await publications(client, 1)
    assert [item["event"]["payload"]["n"] for item in got] == [2, 3, 4, 5, 6, 7]
    assert later["event"]["payload"]["n"] == 8
    seqs = [item["position"]["seq"] for item in got]
    assert seqs == sorted(set(seqs))


async def test_a_position_of_another_epoch_or_ahead_of_the_stream_gets_an_explicit_resync(realtime, api_keys):
    service, _ = realtime
    async with ws(service, api_keys["read"]) as client:
        stale = await subscribe(client, "records", since={"epoch": "1", "seq": 3})
        assert stale["recovered"] is False
        assert "another epoch" in stale["reason"]
        current = stale["position"]
        ahead = await subscribe(
            client, "deals", since={"epoch": current["epoch"], "seq": current["seq"] + 1000}, frame_id=2
        )
        assert ahead["recovered"] is False
        assert "ahead of the stream" in ahead["reason"]


async def read_until_closed(client: ClientConnection) -> None:
    """Read what comes until the connection closes (ConnectionClosed says how)."""
    while True:
        await asyncio.wait_for(client.recv(), 10)


def metric(name: str) -> float:
    return sample(name)


def slow_consumers() -> float:
    return metric("sophia_realtime_slow_consumers_total")


async def test_a_slow_consumer_is_disconnected_and_the_others_keep_receiving(own_streams, api_keys):
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_queue": 100})
    dropped = slow_consumers()
    sent, waiting = metric("sophia_realtime_bytes_total"), metric("sophia_realtime_backlog_frames")
    async with contextlib.AsyncExitStack() as stack:
        service = await stack.enter_async_context(RealtimeService(settings))
        slow = await stack.enter_async_context(narrow_client(service, api_keys["read"]))
        quick = await stack.enter_async_context(ws(service, api_keys["read"]))
        await subscribe(slow, "records")
        await subscribe(quick, "records")
        # the slow one never reads: its 4 KiB window and the service's send buffer fill up, its
        # transport pushes back, then its backlog fills (100 frames) and it is dropped
        events = [record_event("crm", "note", n, padding=2000) for n in range(400)]
        receiving = asyncio.create_task(publications(quick, len(events)))
        await publish(settings, events)
        got = await asyncio.wait_for(receiving, 30)
        assert [item["event"]["payload"]["n"] for item in got] == list(range(400))
        await eventually(lambda: slow_consumers() == dropped + 1)

        with pytest.raises(ConnectionClosed) as closed:  # what reached its socket before the drop
            await read_until_closed(slow)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008
    assert "more than 100 frames behind" in closed.value.rcvd.reason
    assert slow_consumers() == dropped + 1  # the slow one only
    assert metric("sophia_realtime_bytes_total") >= sent + 400 * 2000  # the quick one's, at least
    assert metric("sophia_realtime_backlog_frames") == waiting  # the dropped one's backlog forgotten


@pytest.mark.load  # 101 clients, 80 MB through loopback: seconds of both cores
async def test_a_slow_consumer_is_dropped_while_a_hundred_others_keep_receiving_on_time(
    own_streams, api_keys
):
    """The slow client reads nothing (through a 4 KiB receive buffer); the hundred others read
    everything. It is dropped with 4008 once its kernel buffer (SOPHIA_REALTIME_SEND_BUFFER_BYTES),
    transport and backlog are full, and every other gets every event, in order."""
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_queue": 100})
    dropped = slow_consumers()
    async with contextlib.AsyncExitStack() as stack:
        service = await stack.enter_async_context(RealtimeService(settings))
        slow = await stack.enter_async_context(narrow_client(service, api_keys["read"]))
        quick = [await stack.enter_async_context(ws(service, api_keys["read"])) for _ in range(100)]
        for client in [slow, *quick]:
            await subscribe(client, "records")
        events = [record_event("crm", "note", n, padding=2000) for n in range(400)]
        started = time.monotonic()
        receiving = [asyncio.create_task(publications(client, len(events))) for client in quick]
        await publish(settings, events)
        # once dropped, the slow client reads what reached its socket, within the close timeout
        # (a dropped client that reads nothing is cut after it, without its close frame)
        await eventually(lambda: slow_consumers() == dropped + 1, timeout_s=60)
        with pytest.raises(ConnectionClosed) as closed:  # what reached its socket before the drop
            await read_until_closed(slow)
        got = await asyncio.wait_for(asyncio.gather(*receiving), 60)
        took_s = time.monotonic() - started
        assert all([item["event"]["payload"]["n"] for item in one] == list(range(400)) for one in got)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008
    assert took_s < 30, f"the others took {took_s:.1f} s"


@pytest.mark.load  # 24 MB through loopback, 1.6 s: the backlog's logic is tested in test_backlog.py
async def test_a_client_that_stops_reading_a_while_gets_all_of_it_from_its_backlog(own_streams, api_keys):
    """It reads nothing while 24 MB are sent: the sockets' buffers fill up, its transport pushes
    back and the rest waits in its backlog (bounded at 10,000 frames here); once it reads, every
    frame comes, in order, once, and it is not taken for a slow consumer."""
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_queue": 10_000})
    dropped = slow_consumers()
    async with RealtimeService(settings) as service, ws(service, api_keys["read"]) as client:
        subscribed = await subscribe(client, "records")
        [served] = service.server.clients
        feed = service.server.feeds["records"]
        events = [record_event("crm", "note", n, padding=8000) for n in range(3000)]
        await publish(settings, events)
        await eventually(lambda: feed.live_seq >= subscribed["position"]["seq"] + len(events))
        assert served.queued > 0  # held back: the transport took no more
        got = await asyncio.wait_for(publications(client, len(events)), 30)
        assert served.queued == 0
        with pytest.raises(TimeoutError):
            await frame(client, timeout_s=0.3)  # and nothing twice
        assert served.behind is None
    assert [item["event"]["payload"]["n"] for item in got] == list(range(len(events)))
    assert slow_consumers() == dropped


async def test_no_key_or_a_bad_one_is_refused_in_the_handshake(realtime):
    service, _ = realtime
    for secret in (None, "sk_0123abcd_" + "Z" * 43):
        with pytest.raises(InvalidStatus) as refused:
            async with ws(service, secret):
                pass
        assert refused.value.response.status_code == 401


async def test_a_read_key_cannot_subscribe_to_what_it_may_not_read(realtime, api_keys):
    service, _ = realtime
    async with ws(service, api_keys["read"]) as client:
        await client.send(orjson.dumps({"op": "subscribe", "id": 7, "channel": "system-events"}).decode())
        answer = await frame(client)
    assert answer == {
        "type": "error",
        "id": 7,
        "code": "forbidden",
        "detail": "Channel 'system-events' needs a key with the 'admin' scope; this key has 'read'.",
    }


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"op": "dance"}', "unknown_op"),
        ('{"op": "subscribe", "channel": "nope"}', "unknown_channel"),
        ('{"op": "subscribe", "channel": "records:Bad Name"}', "bad_channel"),
        ('{"op": "subscribe", "channel": "records", "extra": 1}', "bad_frame"),
        ('{"op": "subscribe", "channel": "records", "since": {"seq": -1}}', "bad_position"),
        ('{"op": "unsubscribe", "channel": "records"}', "not_subscribed"),
        ('{"op": "ping", "id": {"deep": [[[[]]]]}}', "bad_frame"),
        ('{"op": "subscribe", "channel": "records\\u0000"}', "unknown_channel"),
        ('{"op": "subscribe", "channel": "records:\\ud800"}', "bad_frame"),
    ],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_connection_goes_on(realtime, api_keys, sent, code):
    service, _ = realtime
    async with ws(service, api_keys["read"]) as client:
        await client.send(sent)
        answer = await frame(client)
        assert answer["type"] == "error"
        assert answer["code"] == code
        assert answer["detail"]
        await client.send('{"op": "ping", "id": "still-there"}')
        assert await frame(client) == {"type": "pong", "id": "still-there"}


async def test_an_oversize_frame_closes_with_1009_and_a_flood_of_subscriptions_is_capped(realtime, api_keys):
    service, settings = realtime
    async with ws(service, api_keys["read"]) as client:
        await client.send("x" * (settings.realtime_max_frame_bytes + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await frame(client)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    limited = settings.model_copy(update={"realtime_max_subscriptions": 3})
    service.server.settings = limited
    async with ws(service, api_keys["read"]) as client:
        for number, channel in enumerate(["records", "deals", "records:a", "records:b"]):
            await client.send(orjson.dumps({"op": "subscribe", "id": number, "channel": channel}).decode())
        answers = [await frame(client) for _ in range(4)]
    assert [answer["type"] for answer in answers] == ["subscribed"] * 3 + ["error"]
    assert answers[-1]["code"] == "too_many_subscriptions"


async def test_two_instances_share_nothing_but_the_engines_and_each_fans_out_every_event(
    own_streams, api_keys
):
    first_settings = own_streams.model_copy(update={"realtime_port": 0})
    async with (
        RealtimeService(first_settings) as first,
        RealtimeService(first_settings) as second,
        ws(first, api_keys["read"]) as one,
        ws(second, api_keys["read"]) as other,
    ):
        await subscribe(one, "records:shared")
        await subscribe(other, "records:shared")
        await publish(first_settings, [record_event("shared", "deal", n) for n in range(5)])
        got_one = await publications(one, 5)
        got_other = await publications(other, 5)
    assert [item["event"]["payload"]["n"] for item in got_one] == list(range(5))
    assert [item["position"] for item in got_one] == [item["position"] for item in got_other]


async def test_a_browser_connects_with_a_token_from_the_api_that_carries_its_keys_scope(realtime, api_keys):
    from app_clients import app_client

    service, settings = realtime
    async with app_client(settings, api_keys["read"]) as api:
        answer = await api.post("/api/v1/realtime/token")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["expires_in"], body["scope"]) == (60, "read")
    url = f"ws://127.0.0.1:{service.port}/ws?token={body['token']}"
    async with connect(url, open_timeout=5) as client:
        await subscribe(client, "records")
        await client.send(orjson.dumps({"op": "subscribe", "id": 2, "channel": "system-events"}).decode())
        assert (await frame(client))["code"] == "forbidden"
    for token in (body["token"][:-3] + "AAA", "rt1.e30.AAAA"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{service.port}/ws?token={token}", open_timeout=5):
                pass
        assert refused.value.response.status_code == 401


def resumes(outcome: str) -> float:
    return sample("sophia_realtime_resumes_total", outcome=outcome)


async def test_a_recent_resume_is_served_from_memory_and_an_older_one_from_the_stream(own_streams, api_keys):
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_history_events": 3})
    async with RealtimeService(settings) as service:
        async with ws(service, api_keys["read"]) as client:
            await subscribe(client, "records:mem")
            await publish(settings, [record_event("mem", "deal", 0)])
            [first] = await publications(client, 1)
        feed = service.server.feeds["records"]
        await publish(settings, [record_event("mem", "deal", n) for n in (1, 2)])
        await eventually(lambda: feed.live_seq >= first["position"]["seq"] + 2)
        memory, stream = resumes("from_memory"), resumes("from_stream")
        async with ws(service, api_keys["read"]) as client:
            assert (await subscribe(client, "records:mem", since=first["position"]))["recovered"] is True
            recent = await publications(client, 2)
        assert resumes("from_memory") == memory + 1
        await publish(settings, [record_event("mem", "deal", n) for n in range(3, 7)])  # memory: 4, 5, 6
        await eventually(lambda: feed.live_seq >= recent[-1]["position"]["seq"] + 4)
        async with ws(service, api_keys["read"]) as client:
            assert (await subscribe(client, "records:mem", since=recent[-1]["position"]))["recovered"] is True
            older = await publications(client, 4)
        assert resumes("from_stream") == stream + 1
    assert [item["event"]["payload"]["n"] for item in recent + older] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("history_events", [1_000, 2, 0], ids=["from_memory", "from_stream", "no_memory"])
async def test_the_events_packed_in_one_message_each_get_a_position_and_resume_mid_message(
    own_streams, api_keys, history_events
):
    """The publisher packs a subject's events into one message; each event is its own publication
    at its own position, and a client that saw part of a message resumes with the rest of it."""
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_history_events": history_events})
    sent = [Envelope.new("user.event", "u-pack", {"name": "step", "n": n}, source="test") for n in range(8)]
    async with RealtimeService(settings) as service, NatsConnection(settings.nats_url or "") as nats:
        async with ws(service, api_keys["admin"]) as client:
            await subscribe(client, "user-events:u-pack")
            await EventPublisher(nats, stream_specs(settings)).publish(sent)
            got = await publications(client, len(sent))
        positions = [item["position"]["seq"] for item in got]
        assert [item["event"]["payload"]["n"] for item in got] == list(range(8))
        assert positions == list(range(positions[0], positions[0] + 8))  # one message, eight positions
        outcome = "from_memory" if history_events > len(sent) else "from_stream"
        before = resumes(outcome)
        async with ws(service, api_keys["admin"]) as client:
            resumed = await subscribe(client, "user-events:u-pack", since=got[2]["position"])
            assert resumed["recovered"] is True
            rest = await publications(client, 5)
            # nothing twice: a repeat would come before an event published after all of them
            later = Envelope.new("user.event", "u-pack", {"name": "step", "n": 8}, source="test")
            await EventPublisher(nats, stream_specs(settings)).publish([later])
            [after] = await publications(client, 1)
        assert [item["position"]["seq"] for item in rest] == positions[3:]
        assert after["event"]["payload"]["n"] == 8
        assert resumes(outcome) == before + 1


async def test_a_resume_that_would_read_more_events_than_the_bound_gets_a_resync(
    own_streams, api_keys, monkeypatch
):
    """Messages carry up to 256 events: a resume is bounded by the events it reads, not only by the
    messages, so that no client makes the service hold more than that in memory."""
    monkeypatch.setattr(feed_module, "REPLAY_MAX_EVENTS", 10)
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_history_events": 0})
    sent = [Envelope.new("user.event", "u-far", {"name": "step", "n": n}, source="test") for n in range(12)]
    async with RealtimeService(settings) as service, NatsConnection(settings.nats_url or "") as nats:
        async with ws(service, api_keys["admin"]) as client:
            before = await subscribe(client, "user-events:u-far")
            await EventPublisher(nats, stream_specs(settings)).publish(sent)
            got = await publications(client, len(sent))
        async with ws(service, api_keys["admin"]) as client:
            far = await subscribe(client, "user-events:u-far", since=before["position"])
        async with ws(service, api_keys["admin"]) as client:
            near = await subscribe(client, "user-events:u-far", since=got[5]["position"])
            rest = await publications(client, 6)
    assert far["recovered"] is False
    assert "more than 10 events behind" in far["reason"]
    assert near["recovered"] is True  # 6 events back: within the bound
    assert [item["event"]["payload"]["n"] for item in rest] == list(range(6, 12))


async def test_a_client_flooding_frames_is_closed_1008_and_others_are_not(own_streams, api_keys):
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_frames_per_s": 20})
    async with RealtimeService(settings) as service, ws(service, api_keys["read"]) as calm:
        async with ws(service, api_keys["read"]) as flood:
            for number in range(100):  # far more than 20 a second with bursts of 40
                try:
                    await flood.send(orjson.dumps({"op": "ping", "id": number}).decode())
                except ConnectionClosed:
                    break

            async def read_until_closed() -> None:
                while True:
                    await frame(flood)

            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed()
        await calm.send('{"op": "ping", "id": "calm"}')
        assert await frame(calm) == {"type": "pong", "id": "calm"}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert "frames a second" in closed.value.rcvd.reason


async def test_a_resume_from_further_back_than_the_clients_queue_gets_all_of_it(own_streams, api_keys):
    """The queue holds 20 frames here: 300 missed events of 2 KB go out in steps, the client is not
    taken for a slow consumer. Sent at once, they would fill the socket's buffers (about 300 KB) and
    the queue twice over; 1,200 small events through a queue of 500 overflowed it only just."""
    settings = own_streams.model_copy(update={"realtime_port": 0, "realtime_max_queue": 20})
    missed = [record_event("far", "deal", n, padding=2000) for n in range(300)]
    async with RealtimeService(settings) as service:
        async with ws(service, api_keys["read"]) as client:
            subscribed = await subscribe(client, "records:far")
        await publish(settings, missed)
        async with ws(service, api_keys["read"]) as client:
            resumed = await subscribe(client, "records:far", since=subscribed["position"])
            assert resumed["recovered"] is True
            got = await publications(client, len(missed))
    assert [item["event"]["payload"]["n"] for item in got] == list(range(len(missed)))


async def test_metrics_need_a_key_when_anonymous_detail_is_off(own_streams, api_keys):
    import httpx

    private = own_streams.model_copy(update={"realtime_port": 0, "anonymous_detail": False})
    async with RealtimeService(private) as service, httpx.AsyncClient(timeout=5) as http:
        url = f"http://127.0.0.1:{service.port}/metrics"
        assert (await http.get(url)).status_code == 401
        shown = await http.get(url, headers={"Authorization": f"Bearer {api_keys['read']}"})
        assert (await http.get(f"http://127.0.0.1:{service.port}/healthz")).status_code == 200
    assert shown.status_code == 200
    assert "sophia_realtime_connections" in shown.text
