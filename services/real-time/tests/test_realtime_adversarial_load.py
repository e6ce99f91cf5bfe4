"""Adversarial clients of the real-time service: every bad input gets a clear error frame or a close
code naming what was wrong, the connection (where it goes on) still answers, nothing is logged as a
server error, and the other clients keep receiving every event once, in order.

Real engines, a real server, real sockets: nothing is mocked. Frames websockets' client would never
send are written to the client's transport as bytes (`raw`: masked with a zero mask).

The last five tests are the defects this file found, each fixed (its docstring says what was
wrong): fragments outside the frame budget, a channel's error code read from its quoted name, users
whose id holds a `:` impossible to follow, a resume on an empty stream waiting 2 s, and error frames
echoing unbounded client strings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from realtime_clients import frame, publications, subscribe, ws
from record_events import publish, record_event
from waiting import eventually
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sophia.core.events import Envelope
from sophia.database import keys, tokens
from sophia.events.connection import NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.events.streams import stream_specs
from sophia.realtime import server as server_module
from sophia.realtime.service import RealtimeService

pytestmark = pytest.mark.load  # hundreds of edge cases: the fast tier keeps the 30 s it has

CODES = {
    "bad_frame",
    "unknown_op",
    "unknown_channel",
    "bad_channel",
    "forbidden",
    "bad_position",
    "already_subscribed",
    "not_subscribed",
    "too_many_subscriptions",
    "unavailable",
}
"""The error codes a client's input may get (docs/realtime.md); `internal` is a server fault."""


@pytest.fixture(scope="module")
async def live(settings) -> AsyncIterator[tuple[RealtimeService, Any]]:
    """One service (default limits) for the module, on streams of its own, deleted afterwards."""
    from streams import delete_streams

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    own = settings.model_copy(update={"events_stream_prefix": prefix, "realtime_port": 0})
    async with RealtimeService(own) as service:
        yield service, own
    assert settings.nats_url
    await delete_streams(settings.nats_url, prefix)


def raw(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client's frame as bytes on the wire (masked with a zero mask: the payload as is)."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    size = len(payload)
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 1 << 16:
        head += bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def ask(client: ClientConnection, body: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send `body` (text as is, anything else as JSON) and return the next frame."""
    await client.send(body if isinstance(body, str | bytes) else orjson.dumps(body).decode())
    return await frame(client, timeout_s)


async def still_there(client: ClientConnection) -> None:
    await client.send('{"op": "ping", "id": "still-there"}')
    assert await frame(client) == {"type": "pong", "id": "still-there"}


async def nothing_more(client: ClientConnection) -> None:
    """No frame is waiting (no duplicate publication): the next one is the answer to a ping."""
    await client.send('{"op": "ping", "id": "last"}')
    assert await frame(client) == {"type": "pong", "id": "last"}


async def closed_with(client: ClientConnection, timeout_s: float = 5.0) -> tuple[int, str]:
    """Read until the connection closes; the code and reason the server sent (a failure if it
    is not closed within `timeout_s` of the last frame)."""
    received = 0
    closed: ConnectionClosed | None = None
    try:
        while True:
            await asyncio.wait_for(client.recv(), timeout_s)
            received += 1
    except ConnectionClosed as gone:
        closed = gone
    except TimeoutError:
        pytest.fail(f"not closed: {received} frames, then nothing for {timeout_s} s")
    assert closed is not None
    assert closed.rcvd is not None, closed
    return closed.rcvd.code, closed.rcvd.reason


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD = "A frame is one JSON object"
BAD_FRAMES: list[tuple[str, str, str, Any]] = [
    # (case id, frame, code, id echoed)
    ("empty", "", "bad_frame", None),
    ("blank", "   ", "bad_frame", None),
    ("null", "null", "bad_frame", None),
    ("number", "1", "bad_frame", None),
    ("string", '"ping"', "bad_frame", None),
    ("array of a frame", '[{"op": "ping", "id": 1}]', "bad_frame", None),
    ("truncated", '{"op": "ping", "id": 1', "bad_frame", None),
    ("trailing garbage", '{"op": "ping", "id": 1} x', "bad_frame", None),
    ("two objects", '{"op": "ping"}{"op": "ping"}', "bad_frame", None),
    ("NaN id", '{"op": "ping", "id": NaN}', "bad_frame", None),
    ("Infinity id", '{"op": "ping", "id": Infinity}', "bad_frame", None),
    (
        "-Infinity seq",
        '{"op": "subscribe", "channel": "records", "since": {"epoch": "a", "seq": -Infinity}}',
        "bad_frame",
        None,
    ),
    ("1e400 id", '{"op": "ping", "id": 1e400}', "bad_frame", None),
    ("too deep", nested(2000), "bad_frame", None),
    ("too deep in an id", '{"op": "ping", "id": ' + nested(1100) + "}", "bad_frame", None),
    ("deep id", '{"op": "ping", "id": ' + nested(900) + "}", "bad_frame", None),
    ("deep channel", '{"op": "subscribe", "id": 9, "channel": ' + nested(900) + "}", "bad_channel", 9),
    (
        "deep since",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": ' + nested(900) + "}",
        "bad_position",
        9,
    ),
    ("deep unknown field", '{"op": "ping", "id": 9, "x": ' + nested(900) + "}", "bad_frame", 9),
    # lone surrogates, as escapes, wherever a string goes
    ("surrogate op", '{"op": "\\ud800"}', "bad_frame", None),
    ("surrogate id", '{"op": "ping", "id": "\\ud800"}', "bad_frame", None),
    ("surrogate key", '{"op": "ping", "\\udfff": 1}', "bad_frame", None),
    ("reversed pair", '{"op": "ping", "id": "\\udc00\\ud800"}', "bad_frame", None),
    ("surrogate channel", '{"op": "unsubscribe", "id": 9, "channel": "\\ud800"}', "bad_frame", None),
    (
        "surrogate epoch",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "\\ud800", "seq": 1}}',
        "bad_frame",
        None,
    ),
    # `op`
    ("no op", '{"id": 9}', "unknown_op", 9),
    ("null op", '{"op": null, "id": 9}', "unknown_op", 9),
    ("numeric op", '{"op": 1, "id": 9}', "unknown_op", 9),
    ("list op", '{"op": ["ping"], "id": 9}', "unknown_op", 9),
    ("object op", '{"op": {"ping": 1}, "id": 9}', "unknown_op", 9),
    ("upper-case op", '{"op": "PING", "id": 9}', "unknown_op", 9),
    ("op with a NUL", '{"op": "ping\\u0000", "id": 9}', "unknown_op", 9),
    ("unknown op", '{"op": "publish", "id": 9, "channel": "records"}', "unknown_op", 9),
    # `id`
    ("float id", '{"op": "ping", "id": 1.5}', "bad_frame", None),
    ("integral float id", '{"op": "ping", "id": 1.0}', "bad_frame", None),
    ("bool id", '{"op": "ping", "id": true}', "bad_frame", None),
    ("2^53 id", '{"op": "ping", "id": 9007199254740992}', "bad_frame", None),
    ("-2^53 id", '{"op": "ping", "id": -9007199254740992}', "bad_frame", None),
    ("u64 id", '{"op": "ping", "id": 18446744073709551615}', "bad_frame", None),
    ("beyond u64 id", '{"op": "ping", "id": 18446744073709551616}', "bad_frame", None),
    ("long id", '{"op": "ping", "id": "' + "x" * 65 + '"}', "bad_frame", None),
    ("list id", '{"op": "ping", "id": [1]}', "bad_frame", None),
    ("object id", '{"op": "ping", "id": {"a": 1}}', "bad_frame", None),
    ("bad id and bad op", '{"op": "dance", "id": 1.5}', "bad_frame", None),
    # unknown or extra fields
    ("ping with a channel", '{"op": "ping", "id": 9, "channel": "records"}', "bad_frame", 9),
    (
        "unsubscribe with since",
        '{"op": "unsubscribe", "id": 9, "channel": "records", "since": null}',
        "bad_frame",
        9,
    ),
    (
        "capitalised field",
        '{"op": "subscribe", "id": 9, "channel": "records", "Since": null}',
        "bad_frame",
        9,
    ),
    ("empty key", '{"op": "ping", "id": 9, "": 1}', "bad_frame", 9),
    # subscribe's `channel`
    ("no channel", '{"op": "subscribe", "id": 9}', "bad_channel", 9),
    ("null channel", '{"op": "subscribe", "id": 9, "channel": null}', "bad_channel", 9),
    ("numeric channel", '{"op": "subscribe", "id": 9, "channel": 7}', "bad_channel", 9),
    ("bool channel", '{"op": "subscribe", "id": 9, "channel": false}', "bad_channel", 9),
    ("list channel", '{"op": "subscribe", "id": 9, "channel": ["records"]}', "bad_channel", 9),
    ("empty channel", '{"op": "subscribe", "id": 9, "channel": ""}', "bad_channel", 9),
    (
        "long channel",
        '{"op": "subscribe", "id": 9, "channel": "records:' + "a" * 200 + '"}',
        "bad_channel",
        9,
    ),
    ("empty segment", '{"op": "subscribe", "id": 9, "channel": "records:"}', "bad_channel", 9),
    ("too many segments", '{"op": "subscribe", "id": 9, "channel": "records:a:b:c"}', "bad_channel", 9),
    ("NUL segment", '{"op": "subscribe", "id": 9, "channel": "records:crm\\u0000"}', "bad_channel", 9),
    ("upper-case family", '{"op": "subscribe", "id": 9, "channel": "Records"}', "unknown_channel", 9),
    ("NUL family", '{"op": "subscribe", "id": 9, "channel": "\\u0000"}', "unknown_channel", 9),
    ("user-events alone", '{"op": "subscribe", "id": 9, "channel": "user-events"}', "bad_channel", 9),
    ("ops segment", '{"op": "subscribe", "id": 9, "channel": "ops:x"}', "bad_channel", 9),
    ("admin channel", '{"op": "subscribe", "id": 9, "channel": "system-events"}', "forbidden", 9),
    ("ops to a read key", '{"op": "subscribe", "id": 9, "channel": "ops"}', "forbidden", 9),
    # subscribe's `since`
    ("list since", '{"op": "subscribe", "id": 9, "channel": "records", "since": []}', "bad_position", 9),
    ("string since", '{"op": "subscribe", "id": 9, "channel": "records", "since": "a:1"}', "bad_position", 9),
    ("false since", '{"op": "subscribe", "id": 9, "channel": "records", "since": false}', "bad_position", 9),
    ("empty since", '{"op": "subscribe", "id": 9, "channel": "records", "since": {}}', "bad_position", 9),
    (
        "no seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a"}}',
        "bad_position",
        9,
    ),
    (
        "no epoch",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"seq": 1}}',
        "bad_position",
        9,
    ),
    (
        "extra in since",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": 1, "x": 1}}',
        "bad_position",
        9,
    ),
    (
        "numeric epoch",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": 1, "seq": 1}}',
        "bad_position",
        9,
    ),
    (
        "empty epoch",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "", "seq": 1}}',
        "bad_position",
        9,
    ),
    (
        "long epoch",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "'
        + "1" * 65
        + '", "seq": 1}}',
        "bad_position",
        9,
    ),
    (
        "string seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": "1"}}',
        "bad_position",
        9,
    ),
    (
        "null seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": null}}',
        "bad_position",
        9,
    ),
    (
        "float seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": 1.0}}',
        "bad_position",
        9,
    ),
    (
        "bool seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": true}}',
        "bad_position",
        9,
    ),
    (
        "negative seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": {"epoch": "a", "seq": -1}}',
        "bad_position",
        9,
    ),
    (
        "2^63 seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": '
        '{"epoch": "a", "seq": 9223372036854775808}}',
        "bad_position",
        9,
    ),
    (
        "u64 seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": '
        '{"epoch": "a", "seq": 18446744073709551615}}',
        "bad_position",
        9,
    ),
    (
        "beyond u64 seq",
        '{"op": "subscribe", "id": 9, "channel": "records", "since": '
        '{"epoch": "a", "seq": 99999999999999999999999}}',
        "bad_position",
        9,
    ),
    (
        "bad since and bad channel",
        '{"op": "subscribe", "id": 9, "channel": 1, "since": []}',
        "bad_position",
        9,
    ),
    # unsubscribe's `channel`
    ("unsubscribe no channel", '{"op": "unsubscribe", "id": 9}', "bad_channel", 9),
    ("unsubscribe null channel", '{"op": "unsubscribe", "id": 9, "channel": null}', "bad_channel", 9),
    ("unsubscribe numeric channel", '{"op": "unsubscribe", "id": 9, "channel": 1}', "bad_channel", 9),
    ("unsubscribe object channel", '{"op": "unsubscribe", "id": 9, "channel": {"a": 1}}', "bad_channel", 9),
    (
        "unsubscribe never subscribed",
        '{"op": "unsubscribe", "id": 9, "channel": "records"}',
        "not_subscribed",
        9,
    ),
    ("unsubscribe unknown channel", '{"op": "unsubscribe", "id": 9, "channel": "nope"}', "not_subscribed", 9),
    (
        "unsubscribe NUL channel",
        '{"op": "unsubscribe", "id": 9, "channel": "records\\u0000"}',
        "not_subscribed",
        9,
    ),
]


@pytest.mark.parametrize(
    ("sent", "code", "echoed"), [case[1:] for case in BAD_FRAMES], ids=[case[0] for case in BAD_FRAMES]
)
async def test_every_bad_frame_gets_its_error_frame_and_the_connection_goes_on(
    live, api_keys, sent, code, echoed
):
    service, _ = live
    async with ws(service, api_keys["read"]) as client:
        answer = await ask(client, sent)
        assert answer["type"] == "error", answer
        assert answer["code"] == code, answer
        assert answer.get("id") == echoed, answer
        assert isinstance(answer["detail"], str), answer
        assert answer["detail"], answer
        await still_there(client)
        [served] = service.server.clients
        assert served.behind is None
        assert served.subscriptions == {}


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ('{"op": "ping", "id": ""}', ""),
        ('{"op": "ping", "id": "' + "x" * 64 + '"}', "x" * 64),
        ('{"op": "ping", "id": "a\\u0000b"}', "a\x00b"),
        ('{"op": "ping", "id": "\\ud83d\\ude00"}', "\U0001f600"),  # a pair is no lone surrogate
        ('{"op": "ping", "id": 9007199254740991}', 2**53 - 1),
        ('{"op": "ping", "id": -9007199254740991}', -(2**53) + 1),
        ('{"op": "ping", "id": -0}', 0),
        ('{"op": "ping", "id": null}', None),
        ('{"op": "ping", "op": "ping", "id": 1}', 1),
    ],
)
async def test_edge_ids_are_echoed_as_sent(live, api_keys, sent, echoed):
    service, _ = live
    async with ws(service, api_keys["read"]) as client:
        answer = await ask(client, sent)
    assert answer == ({"type": "pong"} if echoed is None else {"type": "pong", "id": echoed})


async def test_a_binary_frame_of_a_valid_request_is_refused_and_subscribes_nothing(live, api_keys):
    service, _ = live
    async with ws(service, api_keys["read"]) as client:
        answer = await ask(client, b'{"op": "subscribe", "id": 1, "channel": "records"}')
        assert (answer["type"], answer["code"], answer.get("id")) == ("error", "bad_frame", None)
        answer = await ask(client, b"")
        assert answer["code"] == "bad_frame"
        [served] = service.server.clients
        assert served.subscriptions == {}
        await still_there(client)


@pytest.mark.parametrize(
    ("name", "wire", "code", "reason"),
    [
        ("one byte over the limit", "over", 1009, "exceeds limit of 65536 bytes"),
        ("fragments over the limit", "fragments_over", 1009, "exceeds limit of 65536 bytes"),
        ("4,097 fragments", "many_fragments", 1008, "frames a second"),  # each fragment counts
        ("invalid UTF-8 (a surrogate's bytes)", "surrogate_bytes", 1007, "invalid continuation byte"),
        ("a reserved bit", "rsv1", 1002, "reserved bits must be 0"),
        ("unmasked", "unmasked", 1002, "incorrect masking"),
        ("a reserved opcode", "opcode", 1002, "invalid opcode"),
        ("a continuation first", "continuation", 1002, "unexpected continuation frame"),
        ("a new message amid one", "interleaved", 1002, "expected a continuation frame"),
        ("a fragmented ping", "fragmented_ping", 1002, "fragmented control frame"),
        ("a ping of 126 bytes", "long_ping", 1002, "control frame too long"),
        ("a close code of 999", "close_999", 1002, "invalid status code"),
    ],
)
async def test_a_frame_breaking_the_websocket_protocol_is_closed_with_its_code_and_others_go_on(
    live, api_keys, name, wire, code, reason
):
    service, settings = live
    limit = settings.realtime_max_frame_bytes
    ping = b'{"op":"ping","id":"big"}'
    frames = {
        "over": raw(0x1, ping[:-1] + b" " * (limit - len(ping) + 1) + b"}"),
        "fragments_over": raw(0x1, b" " * (limit // 2), fin=False) + raw(0x0, b" " * (limit // 2 + 1)),
        "many_fragments": raw(0x1, b"", fin=False) + raw(0x0, b"", fin=False) * 4095 + raw(0x0, ping),
        "surrogate_bytes": raw(0x1, b'{"op":"ping","id":"\xed\xa0\x80"}'),
        "rsv1": bytes((0xC1, 0x80 | 2)) + b"\0\0\0\0{}",
        "unmasked": bytes((0x81, 2)) + b"{}",
        "opcode": raw(0x3, b"{}"),
        "continuation": raw(0x0, ping),
        "interleaved": raw(0x1, b"{", fin=False) + raw(0x1, b"}"),
        "fragmented_ping": raw(0x9, b"p", fin=False),
        "long_ping": bytes((0x89, 0x80 | 126)) + (126).to_bytes(2, "big") + b"\0\0\0\0" + b"p" * 126,
        "close_999": raw(0x8, (999).to_bytes(2, "big") + b"x"),
    }
    async with ws(service, api_keys["read"]) as calm, ws(service, api_keys["read"]) as bad:
        bad.transport.write(frames[wire])
        got_code, got_reason = await closed_with(bad)
        await still_there(calm)
    assert got_code == code, (name, got_code, got_reason)
    assert reason in got_reason


async def test_frames_just_under_the_size_limit_are_answered(live, api_keys):
    service, settings = live
    limit = settings.realtime_max_frame_bytes
    ping = '{"op":"ping","id":"big"}'
    async with ws(service, api_keys["read"]) as client:
        assert await ask(client, ping[:-1] + " " * (limit - len(ping)) + "}") == {"type": "pong", "id": "big"}
        two = raw(0x1, b" " * (limit // 2), fin=False) + raw(
            0x0, ping.encode() + b" " * (limit // 2 - len(ping))
        )
        client.transport.write(two)  # the same bytes in two fragments
        assert await frame(client) == {"type": "pong", "id": "big"}
        client.transport.write(  # 40 fragments: within the frame budget, each fragment counted
            raw(0x1, b"", fin=False) + raw(0x0, b"", fin=False) * 38 + raw(0x0, ping.encode())
        )
        assert await frame(client) == {"type": "pong", "id": "big"}
        await still_there(client)


async def test_garbage_past_and_future_positions_get_a_resync_and_no_event_is_missed_or_repeated(
    live, api_keys
):
    service, settings = live
    feed = service.server.feeds["records"]
    positions = [
        {"epoch": "1", "seq": 3},  # another epoch
        {"epoch": "\x00", "seq": 0},
        {"epoch": "ops-1", "seq": 0},
        {"epoch": service.server.feeds["ml-predictions"].epoch, "seq": 1023},  # another stream's
        {"epoch": feed.epoch, "seq": 2**63 - 1},  # the future
        {"epoch": feed.epoch, "seq": feed.live_seq + 1_000_000},
    ]
    async with ws(service, api_keys["read"]) as client:
        for number, since in enumerate(positions):
            channel = f"records:pos{number}"
            answer = await ask(client, {"op": "subscribe", "id": number, "channel": channel, "since": since})
            assert (answer["type"], answer["id"], answer["channel"]) == ("subscribed", number, channel), (
                answer
            )
            assert answer["recovered"] is False, answer
            assert answer["reason"].startswith("Not resumed: "), answer
            assert answer["position"]["epoch"] == feed.epoch
            assert answer["position"]["seq"] <= feed.live_seq
        await publish(
            settings, [record_event(f"pos{number}", "deal", number) for number in range(len(positions))]
        )
        got = await publications(client, len(positions))
        await nothing_more(client)
    assert sorted((item["channel"], item["event"]["payload"]["n"]) for item in got) == [
        (f"records:pos{number}", number) for number in range(len(positions))
    ]


async def test_a_duplicate_subscription_is_refused_and_the_first_delivers_each_event_once(live, api_keys):
    service, settings = live
    async with ws(service, api_keys["read"]) as client:
        first = await subscribe(client, "records:dup")
        again = await ask(client, {"op": "subscribe", "id": 2, "channel": "records:dup"})
        resumed = await ask(
            client, {"op": "subscribe", "id": 3, "channel": "records:dup", "since": first["position"]}
        )
        for answer, frame_id in ((again, 2), (resumed, 3)):
            assert (answer["type"], answer["id"], answer["code"]) == ("error", frame_id, "already_subscribed")
        await publish(settings, [record_event("dup", "deal", n) for n in range(3)])
        got = await publications(client, 3)
        await nothing_more(client)
        assert await ask(client, {"op": "unsubscribe", "id": 4, "channel": "records:dup"}) == {
            "type": "unsubscribed",
            "id": 4,
            "channel": "records:dup",
        }
        twice = await ask(client, {"op": "unsubscribe", "id": 5, "channel": "records:dup"})
        assert (twice["code"], twice["id"]) == ("not_subscribed", 5)
        await publish(settings, [record_event("dup", "deal", 3)])
        resumed = await subscribe(client, "records:dup", since=got[-1]["position"], frame_id=6)
        assert resumed["recovered"] is True
        [after] = await publications(client, 1)  # the one published while unsubscribed, once
        await nothing_more(client)
    assert [item["event"]["payload"]["n"] for item in [*got, after]] == [0, 1, 2, 3]


async def test_the_hundred_and_first_subscription_is_refused_and_the_hundred_keep_receiving(live, api_keys):
    service, settings = live
    async with ws(service, api_keys["read"]) as client:
        for number in range(100):  # a burst of 100 frames: within the budget (twice 50 a second)
            await client.send(
                orjson.dumps({"op": "subscribe", "id": number, "channel": f"records:m{number}"}).decode()
            )
        answers = [await frame(client) for _ in range(100)]
        assert [answer["type"] for answer in answers] == ["subscribed"] * 100
        await asyncio.sleep(0.05)  # a token or two back
        refused = await ask(client, {"op": "subscribe", "id": 100, "channel": "records:m100"})
        assert (refused["code"], refused["id"]) == ("too_many_subscriptions", 100)
        await publish(settings, [record_event("m99", "deal", 1), record_event("m100", "deal", 2)])
        [got] = await publications(client, 1)
        assert got["channel"] == "records:m99"
        await nothing_more(client)


async def test_a_flood_of_bad_frames_is_closed_1008_while_another_client_gets_every_event(live, api_keys):
    service, settings = live
    async with ws(service, api_keys["read"]) as calm, ws(service, api_keys["read"]) as flood:
        await subscribe(calm, "records:calm")
        receiving = asyncio.create_task(publications(calm, 20))
        flood.transport.write(raw(0x2, b"\xff" * 100) * 300)  # 300 binary frames at once
        await publish(settings, [record_event("calm", "deal", n) for n in range(20)])
        code, reason = await closed_with(flood)
        got = await asyncio.wait_for(receiving, 10)
        await nothing_more(calm)
    assert (code, reason) == (1008, "more than 50 frames a second; slow down")
    assert [item["event"]["payload"]["n"] for item in got] == list(range(20))


async def test_tokens_that_are_forged_altered_expired_or_garbage_are_refused_with_401(
    live, api_keys, database
):
    service, _ = live
    async with database.connection() as connection:
        key = await keys.find_active(connection, api_keys["read"])
    assert key is not None
    secret = service.server.token_secret
    good = tokens.issue(secret, key)
    base = f"ws://127.0.0.1:{service.port}/ws"
    refused = [
        tokens.issue(secret, key, ttl_s=-1),  # expired
        tokens.issue(b"\0" * 32, key),  # signed by another secret
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # altered
        "rt2" + good[3:],
        "a" * 600,  # past the length bound
        "rt1.%ED%A0%80." + good.rsplit(".", 1)[1],  # a lone surrogate's bytes in the claims
        "rt1..",
        "%00",
        "zzz&token=" + good,  # the first is the one checked
    ]
    for token in refused:
        with pytest.raises(InvalidStatus) as answer:
            async with connect(f"{base}?token={token}", open_timeout=5):
                pass
        assert answer.value.response.status_code == 401, token
        assert b"token is not valid or has expired" in answer.value.response.body
    with pytest.raises(InvalidStatus) as answer:  # a key header wins over a token, and a bad key is refused
        async with connect(
            f"{base}?token={good}", additional_headers={"Authorization": "Bearer nope"}, open_timeout=5
        ):
            pass
    assert answer.value.response.status_code == 401
    async with connect(f"{base}?token={good}", open_timeout=5) as client:  # read scope: no admin channel
        for number, channel in enumerate(["system-events", "ops", "user-events:u-1"]):
            answer = await ask(client, {"op": "subscribe", "id": number, "channel": channel})
            assert (answer["code"], answer["id"]) == ("forbidden", number)
        await still_there(client)


async def test_a_write_key_may_not_read_admin_channels(live, api_keys):
    service, _ = live
    async with ws(service, api_keys["write"]) as client:
        answer = await ask(client, {"op": "subscribe", "id": 1, "channel": "system-events"})
        assert (answer["code"], answer["id"]) == ("forbidden", 1)
        assert "'admin'" in answer["detail"]
        assert "'write'" in answer["detail"]
        assert (await subscribe(client, "records", frame_id=2))["id"] == 2


async def test_an_address_guessing_keys_gets_429_with_retry_after_and_connected_clients_go_on(
    own_streams, api_keys
):
    settings = own_streams.model_copy(update={"realtime_port": 0})
    async with RealtimeService(settings) as service, ws(service, api_keys["read"]) as calm:
        await subscribe(calm, "records:guess")
        statuses = []
        for _ in range(settings.auth_failure_limit + 2):
            with pytest.raises(InvalidStatus) as refused:
                async with ws(service, "sk_0123abcd_" + "Z" * 43):
                    pass
            statuses.append(
                (refused.value.response.status_code, refused.value.response.headers.get("Retry-After"))
            )
        await publish(settings, [record_event("guess", "deal", 1)])
        [got] = await publications(calm, 1)
    assert statuses[0] == (401, None)
    assert statuses[-1][0] == 429
    assert int(statuses[-1][1]) >= 1
    assert got["event"]["payload"]["n"] == 1


HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def test_clients_gone_mid_handshake_or_mid_frame_leave_nothing_behind_and_log_no_error(
    live, api_keys, caplog, logs_of
):
    caplog.set_level(logging.DEBUG, logger="websockets")
    logs = logs_of(server_module)
    service, settings = live
    full = HANDSHAKE + f"Authorization: Bearer {api_keys['read']}\r\n\r\n"
    subscribe_frame = raw(0x1, orjson.dumps({"op": "subscribe", "id": 1, "channel": "records:gone"}))
    async with ws(service, api_keys["read"]) as calm:
        await subscribe(calm, "records:stay")
        cuts = [
            b"",
            full[:5].encode(),
            full[:40].encode(),
            HANDSHAKE.encode(),
            full[:-1].encode(),
            full.encode(),  # upgraded, then gone
            full.encode() + subscribe_frame[:5],  # gone mid-frame
            full.encode() + subscribe_frame,  # gone with its subscribe in flight
            (HANDSHAKE + "Authorization: Bearer sk_0123abcd_" + "Y" * 43 + "\r\n\r\n").encode(),  # mid-lookup
        ]
        for number, data in enumerate(cuts):
            _, writer = await asyncio.open_connection("127.0.0.1", service.port)
            writer.write(data)
            await writer.drain()
            if number % 2:
                writer.transport.abort()  # a reset
            else:
                writer.close()  # a FIN
        await eventually(lambda: len(service.server.clients) == 1)
        await eventually(lambda: not service.hub.listened("records:gone"))
        await publish(settings, [record_event("stay", "deal", 1)])
        [got] = await publications(calm, 1)
        await nothing_more(calm)
    assert got["event"]["payload"]["n"] == 1
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert [
        entry for entry in logs.entries if entry.get("log_level") in ("warning", "error", "critical")
    ] == []


# --- property-based: whatever JSON object a client sends, an answer from the documented set -------

_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "\0", "records\0", "\U0001f600"]
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_channels = (
    st.sampled_from(
        [
            "records",
            "deals",
            "analytics",
            "ml-predictions",
            "system-events",
            "ops",
            "user-events:u-1",
            "records:crm",
            "records:crm:deal",
            "records:Crm",
            "records:a:b:c",
            "user-events:",
            "nope",
            ":records",
        ]
    )
    | _values
)
_since = (
    st.fixed_dictionaries(
        {
            "epoch": st.sampled_from(["1", "x" * 64, "x" * 65, "", "ops-1"]) | _values,
            "seq": st.integers(-5, 2**65) | st.sampled_from([0, 1023, 2**63 - 1, 2**63]) | _values,
        }
    )
    | _values
)
FRAMES = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "unsubscribe", "ping"]) | _values},
    optional={
        "id": st.integers(-(2**54), 2**54) | _values,
        "channel": _channels,
        "since": _since,
        "x": _values,
    },
)


async def answers_from_the_documented_set(service: RealtimeService, api_keys, body: dict[str, Any]) -> None:
    scope = ("read", "admin")[len(repr(body)) % 2]
    async with ws(service, api_keys[scope]) as client:
        # stdlib json: integers past 64 bits, and non-ASCII as is or escaped
        await client.send(json.dumps(body, ensure_ascii=bool(len(repr(body)) % 3)))
        answer = await frame(client, timeout_s=3)
        assert answer["type"] in {"subscribed", "unsubscribed", "pong", "error"}, (body, answer)
        if answer["type"] == "error":
            assert answer["code"] in CODES, (body, answer)
        await client.send('{"op": "ping", "id": "after"}')
        while (after := await frame(client))["type"] == "publication":
            pass
        assert after == {"type": "pong", "id": "after"}, (body, after)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=FRAMES)
async def test_any_json_object_gets_a_documented_answer_and_the_connection_goes_on(live, api_keys, body):
    await answers_from_the_documented_set(live[0], api_keys, body)


@hypothesis_settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=FRAMES)
async def test_any_json_object_gets_a_documented_answer_thoroughly(live, api_keys, body):
    await answers_from_the_documented_set(live[0], api_keys, body)


# --- defects found here, fixed ---------------------------------------------------------------------


async def test_a_flood_of_fragments_is_closed_1008_like_any_flood_of_frames(live, api_keys):
    """The frame budget (50 a second, bursts of 100, "pings and pongs included") counted
    whole messages in the handler and pings/pongs in `Connection.process_event`, never the
    fragments of a message: one message of 4,095 empty fragments costs one token. Three such
    messages (12,000 frames at once) get three pongs and no 1008; sixty (240,000 frames, 1.4 MB)
    held the event loop about 0.9 s, delaying another client's pong to 250-540 ms (0.1 ms
    otherwise), and fifty a second for 3 s (200,000 frames a second) were never closed."""
    service, _ = live
    async with ws(service, api_keys["read"]) as calm, ws(service, api_keys["read"]) as flood:
        message = raw(0x1, b"", fin=False) + raw(0x0, b"", fin=False) * 4000 + raw(0x0, b'{"op":"ping"}')
        flood.transport.write(message * 3)
        code, reason = await closed_with(flood, timeout_s=1)
        await still_there(calm)
    assert (code, reason) == (1008, "more than 50 frames a second; slow down")


async def test_a_malformed_channel_is_bad_channel_whatever_its_name_says(live, api_keys):
    """`_subscribe` told `unknown_channel` from `bad_channel` by looking for the words
    "Unknown channel" in the detail, which quotes the name: a known family with a malformed segment
    that contains those words is called unknown."""
    service, _ = live
    async with ws(service, api_keys["read"]) as client:
        answer = await ask(client, {"op": "subscribe", "id": 1, "channel": "records:Unknown channel"})
    assert answer["detail"] == "Malformed channel 'records:Unknown channel'."
    assert answer["code"] == "bad_channel"


async def test_a_user_whose_id_holds_a_colon_can_be_followed_on_user_events(live, api_keys):
    """`user-events:<user_id>`: the events API takes any user id, and the channel's own
    pattern admitted `:` (`_USER`), but `parse_channel` split the whole name on `:` first, so
    `user-events:google:123` is a "Malformed channel": that user's events are published on a
    channel no client can subscribe to."""
    service, settings = live
    event = Envelope.new(
        "user.event", "google:123", {"name": "deal.viewed", "user_id": "google:123"}, source="test"
    )
    async with ws(service, api_keys["admin"]) as client:
        answer = await ask(client, {"op": "subscribe", "id": 1, "channel": "user-events:google:123"})
        assert answer["type"] == "subscribed", answer
        async with NatsConnection(settings.nats_url or "") as nats:
            await EventPublisher(nats, stream_specs(settings)).publish([event])
        [got] = await publications(client, 1)
    assert got["event"]["payload"]["user_id"] == "google:123"


async def test_a_resume_from_before_an_empty_streams_first_position_is_answered_at_once(live, api_keys):
    """On a stream with no message yet, a position of its epoch before the first
    one (seq 0 to 1,022: no subscriber was ever given one) passes `not_resumable` (first_seq is 0)
    and `replay` opens a JetStream consumer and waits `REPLAY_IDLE_S` (2 s) for a message that is
    not there: the connection answers nothing, not even a ping, for 2 s."""
    service, _ = live
    feed = service.server.feeds["ml-predictions"]  # nothing here publishes on it: empty
    async with ws(service, api_keys["read"]) as client:
        request = {
            "op": "subscribe",
            "id": 1,
            "channel": "ml-predictions",
            "since": {"epoch": feed.epoch, "seq": 0},
        }
        try:
            answer = await ask(client, request, timeout_s=0.5)
        except TimeoutError:
            pytest.fail("no answer within 0.5 s (it comes after REPLAY_IDLE_S, 2 s)")
    assert answer["type"] == "subscribed"


@pytest.mark.parametrize(
    "sent",
    [
        '{"op": "unsubscribe", "id": 1, "channel": "' + "x" * 60_000 + '"}',
        '{"op": "ping", "id": 1, "' + "x" * 60_000 + '": 1}',
    ],
    ids=["not_subscribed", "unknown_field"],
)
async def test_an_error_frame_does_not_echo_an_unbounded_client_string(live, api_keys, sent):
    """`subscribe` quoted a channel name only up to 200 characters; `not_subscribed`
    and the unknown-fields `bad_frame` quote whatever the client sent, up to the 64 KiB frame limit.
    Each such error frame is a copy of the client's bytes, unshared, in its backlog: a client that
    reads nothing makes the server hold up to 1,000 of them (the queue bound, in frames), about
    64 MB a connection, where docs/realtime.md says the backlog holds references to shared frames."""
    service, _ = live
    async with ws(service, api_keys["read"]) as client:
        answer = await ask(client, sent)
        await still_there(client)
    assert answer["type"] == "error"
    assert len(answer["detail"]) <= 300, f"{len(answer['detail']):,} characters of detail"
