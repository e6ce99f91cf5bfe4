"""Catalog change events written straight to a test's own `records` stream, as the relay would
publish them: what the real-time tests fan out."""

from __future__ import annotations

import uuid

from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs


def record_event(source_system: str, kind: str, number: int, padding: int = 0) -> Envelope:
    """A `record.upserted` numbered `number` (its payload's `n`), `padding` bytes heavier."""
    payload = {
        "padding": "p" * padding,
        "id": str(uuid.uuid4()),
        "source_system": source_system,
        "kind": kind,
        "external_id": f"x-{number}",
        "version": number,
        "n": number,
    }
    return Envelope.new("record.upserted", f"{source_system}/{kind}/x-{number}", payload, source="catalog")


async def publish(settings, events: list[Envelope]) -> None:
    """`events` on the `records` stream of `settings`, in order."""
    spec = stream_specs(settings)["records"]
    async with NatsConnection(settings.nats_url) as nats:
        js = await nats.jetstream()
        for envelope in events:
            await js.publish(spec.subject(envelope.key, envelope.type), encode(envelope), stream=spec.name)
