"""Streams a test made for itself (under a prefix of its own), deleted when it is done."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sophia.events.connection import NatsConnection

T = TypeVar("T")


async def delete_streams(nats_url: str, prefix: str) -> None:
    """Delete every JetStream stream whose name starts with `prefix`."""
    async with NatsConnection(nats_url) as nats:
        js = await nats.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)


async def stream_documents(js: Any, name: str, decode: Callable[[bytes], Iterable[T]]) -> list[T]:
    """Everything stream `name` holds, in stream order: each message's data through `decode` (the
    events' codec gives one or several documents a message)."""
    info = await js.stream_info(name)
    return [
        document
        for sequence in range(info.state.first_seq, info.state.last_seq + 1)
        for document in decode((await js.get_msg(name, sequence)).data)
    ]
