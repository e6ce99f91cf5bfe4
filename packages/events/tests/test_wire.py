"""Frames written at once arrive as nats-py's own publishes would, on a real NATS server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.errors import BadHeaderError, BadSubjectError, ConnectionClosedError, MaxPayloadError
from nats.protocol.command import hpub_cmd

from sophia.events.wire import batch_frame, write_frames

BATCH_ID = "0f" * 16
MESSAGE_ID = "01a24a62-e3fc-7000-8000-000000000001"
LIMIT = 1024 * 1024


def test_a_frame_is_the_bytes_nats_py_writes_for_the_same_publish():
    headers = (
        f"NATS/1.0\r\nNats-Batch-Id: {BATCH_ID}\r\nNats-Batch-Sequence: 7\r\n"
        f"Nats-Msg-Id: {MESSAGE_ID}\r\n\r\n"
    )
    expected = hpub_cmd("events.3.user.event", "", headers.encode(), b'{"a":1}')
    assert batch_frame("events.3.user.event", BATCH_ID, 7, MESSAGE_ID, b'{"a":1}', LIMIT) == expected


@pytest.mark.parametrize(
    ("subject", "batch_id", "message_id", "refused"),
    [
        ("events.1 x", BATCH_ID, MESSAGE_ID, BadSubjectError),
        ("", BATCH_ID, MESSAGE_ID, BadSubjectError),
        ("events.1", "ab\r\nEvil: 1", MESSAGE_ID, BadHeaderError),
        ("events.1", BATCH_ID, "id\n", BadHeaderError),
        ("events.1", BATCH_ID, "", BadHeaderError),
    ],
)
def test_a_value_that_would_break_the_frame_is_refused_as_publish_refuses_it(
    subject, batch_id, message_id, refused
):
    with pytest.raises(refused):
        batch_frame(subject, batch_id, 1, message_id, b"{}", LIMIT)


def test_headers_and_payload_together_must_fit_the_servers_limit():
    fits = batch_frame("events.1", BATCH_ID, 1, MESSAGE_ID, b"x" * 100, 100 + 200)
    assert fits.endswith(b"x" * 100 + b"\r\n")
    with pytest.raises(MaxPayloadError):  # the payload alone fits; with its headers it does not
        batch_frame("events.1", BATCH_ID, 1, MESSAGE_ID, b"x" * 100, 100 + 60)


async def test_frames_written_at_once_arrive_in_order_with_their_headers(own_streams):
    client = await nats.connect(own_streams.nats_url)
    try:
        arrived: list[nats.aio.msg.Msg] = []
        done = asyncio.Event()

        async def collect(message: nats.aio.msg.Msg) -> None:
            arrived.append(message)
            if len(arrived) == 4:
                done.set()

        subject = f"{own_streams.events_stream_prefix}wire"  # this test's own
        await client.subscribe(f"{subject}.>", cb=collect)
        await client.publish(f"{subject}.0", b"before", headers={"Nats-Msg-Id": "first"})
        payloads = [b'{"n":1}', b'{"n":2}', b"x" * 70_000]
        frames = [
            batch_frame(f"{subject}.{n}", BATCH_ID, n, f"id-{n}", p, client.max_payload)
            for n, p in enumerate(payloads, 1)
        ]
        await write_frames(client, frames)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await client.close()
    assert [message.subject for message in arrived] == [f"{subject}.{n}" for n in range(4)]
    assert [message.data for message in arrived[1:]] == payloads
    assert [dict(message.headers or {}) for message in arrived[1:]] == [
        {"Nats-Batch-Id": BATCH_ID, "Nats-Batch-Sequence": str(n), "Nats-Msg-Id": f"id-{n}"}
        for n in (1, 2, 3)
    ]


async def test_writing_on_a_closed_client_refuses_and_writes_nothing(own_streams):
    client = await nats.connect(own_streams.nats_url)
    frame = batch_frame("wire-test.1", BATCH_ID, 1, "id", b"x", client.max_payload)
    await client.close()
    with pytest.raises(ConnectionClosedError):
        await write_frames(client, [frame])
    assert client.pending_data_size == 0
