"""Streams a test made for itself (under a prefix of its own), deleted when it is done."""

from __future__ import annotations

from sophia.events.connection import NatsConnection


async def delete_streams(nats_url: str, prefix: str) -> None:
    """Delete every JetStream stream whose name starts with `prefix`."""
    async with NatsConnection(nats_url) as nats:
        js = await nats.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
