"""The shared NATS connection against a real nats-server that goes away under it."""

from __future__ import annotations

import asyncio

import pytest

from sophia.core.errors import Unavailable
from sophia.engines.nats import EmbeddedNats
from sophia.events.connection import NatsConnection


def reconnect_loops() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "Client._attempt_reconnect"
    ]


@pytest.mark.chaos  # stops a NATS server of its own
async def test_a_probe_cut_short_while_nats_is_away_leaves_no_client_reconnecting(tmp_path, caplog):
    server = EmbeddedNats(tmp_path)
    url = await server.start()
    try:
        async with NatsConnection(url, timeout_s=0.5) as connection:
            await connection.ping()
            first_client = connection.client
            assert first_client is not None
            assert first_client.is_connected
            await server.stop()
            # A readiness probe with the same deadline as the ping cancels it mid clean-up.
            with pytest.raises((Unavailable, TimeoutError)):
                await asyncio.wait_for(connection.ping(), connection.timeout_s)
            with pytest.raises(Unavailable, match="NATS is unreachable"):
                await connection.ping()
        assert first_client.is_closed
        assert reconnect_loops() == []
    finally:
        await server.stop()


@pytest.mark.chaos  # stops a NATS server of its own
async def test_reconnects_after_nats_returns_on_the_same_port(tmp_path):
    server = EmbeddedNats(tmp_path)
    url = await server.start()
    try:
        async with NatsConnection(url, timeout_s=0.5) as connection:
            await connection.ping()
            await server.stop()
            with pytest.raises(Unavailable):
                await connection.ping()
            await server.start()
            await connection.ping()
            assert connection.client is not None
            assert connection.client.is_connected
    finally:
        await server.stop()


async def test_a_ping_with_nothing_listening_is_unavailable_and_keeps_no_client():
    from sophia.engines.process import free_port

    async with NatsConnection(f"nats://127.0.0.1:{free_port()}", timeout_s=0.05) as connection:
        with pytest.raises(Unavailable, match="NATS is unreachable") as raised:
            await connection.ping()
        assert raised.value.retry_after_s == 2
        assert connection.client is None
    assert reconnect_loops() == []


async def test_an_error_reported_after_close_ends_the_reconnect_loop_that_reported_it(settings):
    """nats-py's reconnect loop can outlive `close()` (a cancel swallowed mid connect attempt) and
    calls the error callback after each failed attempt: on a closed client, that call ends it."""
    async with NatsConnection(settings.nats_url) as connection:
        await connection.ping()
        client = connection.client
        assert client is not None
    assert client.is_closed
    with pytest.raises(asyncio.CancelledError):
        await connection._on_error(client, ConnectionRefusedError("nats went away"))
