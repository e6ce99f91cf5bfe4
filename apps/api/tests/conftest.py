"""Fixtures the API's test modules share."""

from __future__ import annotations

import pytest
from app_clients import app_client

from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs


@pytest.fixture
async def events_client(own_streams, api_keys):
    """An app publishing to streams of this test's own, and a NATS connection to read them."""
    async with (
        app_client(own_streams, api_keys["write"]) as client,
        NatsConnection(own_streams.nats_url) as nats,
    ):
        client.specs = stream_specs(own_streams)  # type: ignore[attr-defined]
        client.nats = nats  # type: ignore[attr-defined]
        yield client
