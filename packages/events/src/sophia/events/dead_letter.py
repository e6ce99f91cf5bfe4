"""The dead-letter stream: messages a consumer gave up on, with why, until someone replays them.

A dead letter is the original message's bytes and headers on `<dead-letter stream>.<consumer>`,
plus `Sophia-Dead-Letter-*` headers saying where it came from and what went wrong. Its
`Nats-Msg-Id` is the original's stream, sequence and consumer, so a processor that dies between
dead-lettering and terminating a message files it once. Replaying republishes the original to its
own subject (under a new `Nats-Msg-Id`: the original's may still be in the duplicate window) and
then deletes the dead letter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from sophia.core.errors import Invalid, NotFound, Unavailable
from sophia.events.connection import NatsConnection
from sophia.events.streams import StreamSpec, ensure_streams
from sophia.shared.settings import Settings

DEAD_LETTER_NAME = "dead-letter"
DEAD_LETTER_MAX_AGE_S = 30 * 24 * 3600.0
HEADER = "Sophia-Dead-Letter-"
ERROR_MAX_CHARS = 1000


def dead_letter_spec(settings: Settings) -> StreamSpec:
    """The dead-letter stream: `<prefix>dead-letter`, kept 30 days, refusing new letters when full
    (a consumer then retries the message later rather than losing it)."""
    return StreamSpec(
        settings.events_stream_prefix + DEAD_LETTER_NAME,
        partitions=1,
        max_age_s=DEAD_LETTER_MAX_AGE_S,
        max_bytes=settings.events_max_bytes,
        replicas=settings.events_replicas,
    )


async def ensure_dead_letter(js: JetStreamContext, stream: str | StreamSpec) -> str:
    """The stream's name, once it exists: a spec is created or brought up to date; a bare name is
    created with the defaults if missing and otherwise left as its owner configured it."""
    if isinstance(stream, StreamSpec):
        await ensure_streams(js, [stream])
        return stream.name
    try:
        await js.stream_info(stream)
    except NotFoundError:
        await ensure_streams(js, [StreamSpec(stream, partitions=1, max_age_s=DEAD_LETTER_MAX_AGE_S)])
    return stream


def describe(error: BaseException) -> str:
    """One header-safe line: the error's message, with an `Invalid`'s field errors."""
    text = str(error)
    if isinstance(error, Invalid) and error.errors:
        fields = "; ".join(f"{'.'.join(map(str, e.location))}: {e.message}" for e in error.errors)
        text = f"{text} {fields}"
    text = " ".join(text.split())  # headers are lines: no CR or LF
    return text.encode("ascii", "backslashreplace").decode()[:ERROR_MAX_CHARS]


async def publish_dead_letter(
    js: JetStreamContext, dead_letter_stream: str, message: Msg, consumer: str, error: BaseException
) -> None:
    """File `message` on the dead-letter stream with where it came from and `error`."""
    metadata = message.metadata
    own = {k: v for k, v in (message.headers or {}).items() if not k.startswith(("Nats-", HEADER))}
    headers = {
        **own,
        "Nats-Msg-Id": f"{metadata.stream}:{metadata.sequence.stream}:{consumer}",
        HEADER + "Stream": metadata.stream,
        HEADER + "Subject": message.subject,
        HEADER + "Sequence": str(metadata.sequence.stream),
        HEADER + "Consumer": consumer,
        HEADER + "Deliveries": str(metadata.num_delivered),
        HEADER + "Error-Type": type(error).__name__,
        HEADER + "Error": describe(error) or type(error).__name__,
    }
    await js.publish(
        f"{dead_letter_stream}.{consumer}", message.data, stream=dead_letter_stream, headers=headers
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: its sequence in the dead-letter stream, the original and the error."""

    sequence: int
    dead_at: datetime | None
    consumer: str
    stream: str
    subject: str
    original_sequence: int
    deliveries: int
    error_type: str
    error: str
    data: bytes
    headers: dict[str, str]
    """The original's own headers (neither `Nats-*` nor `Sophia-Dead-Letter-*`)."""


def _count(header: str | None) -> int:
    """A count a header holds; 0 when it holds none (anyone may publish to the dead-letter stream)."""
    return int(header) if header is not None and header.isascii() and header.isdigit() else 0


def _dead_letter(raw: RawStreamMsg) -> DeadLetter:
    headers = raw.headers or {}
    return DeadLetter(
        sequence=raw.seq or 0,
        dead_at=raw.time,
        consumer=headers.get(HEADER + "Consumer", ""),
        stream=headers.get(HEADER + "Stream", ""),
        subject=headers.get(HEADER + "Subject", ""),
        original_sequence=_count(headers.get(HEADER + "Sequence")),
        deliveries=_count(headers.get(HEADER + "Deliveries")),
        error_type=headers.get(HEADER + "Error-Type", ""),
        error=headers.get(HEADER + "Error", ""),
        data=raw.data or b"",
        headers={k: v for k, v in headers.items() if not k.startswith(("Nats-", HEADER))},
    )


@contextlib.contextmanager
def _nats_failures_unavailable() -> Iterator[None]:
    """NATS failing in the middle of a command reads as the rest of Sophia's errors do."""
    try:
        yield
    except (NatsError, OSError, TimeoutError) as error:
        raise Unavailable(f"NATS failed: {type(error).__name__}", retry_after_s=2) from error


async def list_dead_letters(nats: NatsConnection, stream: str, limit: int = 50) -> list[DeadLetter]:
    """The oldest `limit` dead letters, in order; none if the stream does not exist yet."""
    found: list[DeadLetter] = []
    with _nats_failures_unavailable():
        js = await nats.jetstream()
        sequence = 1
        while len(found) < limit:
            try:  # the first at or after `sequence` (replayed ones leave gaps)
                raw = await js.get_msg(stream, sequence, subject=f"{stream}.>", next=True)
            except NotFoundError:
                break
            found.append(_dead_letter(raw))
            sequence = found[-1].sequence + 1
    return found


async def show_dead_letter(nats: NatsConnection, stream: str, sequence: int) -> DeadLetter:
    """The dead letter at `sequence`; `NotFound` if there is none."""
    with _nats_failures_unavailable():
        js = await nats.jetstream()
        try:
            return _dead_letter(await js.get_msg(stream, sequence))
        except NotFoundError:
            raise NotFound(f"No dead letter {sequence} in {stream}.") from None


async def replay(nats: NatsConnection, dead_letter_stream: str, sequence: int) -> DeadLetter:
    """Put the dead letter back on its original subject, then delete it; what was replayed.

    Its `Nats-Msg-Id` names this dead letter: replaying it twice within the original stream's
    duplicate window (a crash before the delete) publishes it once."""
    letter = await show_dead_letter(nats, dead_letter_stream, sequence)
    if not letter.subject or not letter.stream:  # a letter someone else published, not a processor
        raise Invalid(f"Dead letter {sequence} names no subject and stream it came from: it cannot go back.")
    headers = {**letter.headers, "Nats-Msg-Id": f"replay:{dead_letter_stream}:{sequence}"}
    with _nats_failures_unavailable():
        js = await nats.jetstream()
        try:
            await js.stream_info(letter.stream)
        except NotFoundError:
            raise NotFound(
                f"Dead letter {sequence} came from stream {letter.stream}, which is gone: it cannot go back."
            ) from None
        await js.publish(letter.subject, letter.data, stream=letter.stream, headers=headers)
        await js.delete_msg(dead_letter_stream, sequence)
    return letter
