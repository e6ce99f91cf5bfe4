"""Many publishes written to NATS as one: the middle of an atomic batch, in NATS's wire protocol.

nats-py's `publish` does per message what a batch needs once: it checks every header name with a
regular expression and every value for line breaks, builds the header block byte by byte, formats
the `HPUB` line, appends to its write buffer and asks its flusher to run. For the plain publishes
between an atomic batch's opening and committing requests, that was about a third of the API's CPU
under `bench/events` (docs/benchmarks.md). Here the batch's frames are formatted in one pass from
headers that are ours (a hex batch id, a count, an event's UUID) and handed to the client's buffer
at once, through the one private method nats-py writes with (`_send_command`). The frames are
nats-py's own (`hpub_cmd`, `pub_cmd`) around a header block a test holds to what a server
delivers, and the client's checks that matter for a batch (closed, draining, disconnected without
buffer, payload over the server's limit) are made here the same way, with nats-py's errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    MsgAlreadyAckdError,
    NotJSMessageError,
    OutboundBufferLimitError,
)
from nats.protocol.command import hpub_cmd, pub_cmd

__all__ = ["ack_all", "batch_frame", "write_frames"]


def _breaks_frame(text: str) -> bool:
    """Empty, or holding a space, a line break or another character a frame line cannot carry
    (two C calls: a third of the time of testing each of them in turn)."""
    return not text or not text.isprintable() or " " in text


def batch_frame(
    subject: str, batch_id: str, sequence: int, message_id: str, payload: bytes, max_payload: int
) -> bytes:
    """The `HPUB` frame of one plain publish of an atomic batch: the headers `Nats-Batch-Id`,
    `Nats-Batch-Sequence` and `Nats-Msg-Id`, in that order, then `payload`.

    nats-py's errors for what `publish` would refuse: `BadSubjectError` for a subject, and
    `BadHeaderError` for a header value, that would break the frame (empty, a space, a line break
    or another unprintable character: never in Sophia's subjects, hex batch ids and UUIDs);
    `MaxPayloadError` for headers and payload together over the server's `max_payload` (which the
    server counts, and answers with a disconnect)."""
    if _breaks_frame(subject):
        raise BadSubjectError
    for value in (batch_id, message_id):
        if _breaks_frame(value):
            raise BadHeaderError(value)
    headers = (
        f"NATS/1.0\r\nNats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: {sequence}\r\n"
        f"Nats-Msg-Id: {message_id}\r\n\r\n"
    ).encode()
    if len(headers) + len(payload) > max_payload:
        raise MaxPayloadError
    return hpub_cmd(subject, "", headers, payload)  # nats-py's own framing


async def ack_all(client: Client | None, messages: Sequence[Msg]) -> None:
    """Acknowledge JetStream `messages` in one write: the `PUB <ack subject>` frames `Msg.ack` writes
    one by one (any connection may ack), with its errors for a message that has no ack subject or
    was acked before."""
    if client is None:
        raise ConnectionClosedError
    frames: list[bytes] = []
    seen: set[int] = set()
    for message in messages:
        reply = message.reply
        if _breaks_frame(reply):
            raise NotJSMessageError
        if message._ackd or id(message) in seen:  # nats-py's own mark, kept so its checks hold
            raise MsgAlreadyAckdError(message)
        seen.add(id(message))
        frames.append(pub_cmd(reply, "", b""))  # what Msg.ack writes
    await write_frames(client, frames)
    for message in messages:
        message._ackd = True


async def write_frames(client: Client, frames: Iterable[bytes]) -> None:
    """Hand `frames` (from `batch_frame`, or acks) to `client`'s write buffer as one write, in
    order after everything published before; raises what `client.publish` would for the same
    messages. All or none: a refused call writes nothing."""
    if client.is_closed:
        raise ConnectionClosedError
    if client.is_draining_pubs:
        raise ConnectionDrainingError
    data = b"".join(frames)
    if not data:
        return
    pending_limit = client._max_pending_size  # the buffer publish() bounds the same way
    if not client.is_connected and (
        pending_limit <= 0 or len(data) + client.pending_data_size > pending_limit
    ):
        raise OutboundBufferLimitError
    await client._send_command(data)  # the one write path nats-py has
    if client._flush_queue is not None and client._flush_queue.empty():
        await client._flush_pending()  # as publish() does: the flusher writes it out
