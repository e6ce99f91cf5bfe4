"""The embedded Valkey and NATS let in only who holds their password (0600 files, never argv)."""

import os

import nats
import pytest
import redis.asyncio as redis
from nats.errors import Error as NatsError
from processes import command_line
from redis.exceptions import AuthenticationError

from sophia.engines.nats import EmbeddedNats
from sophia.engines.valkey import EmbeddedValkey


async def test_valkey_refuses_a_client_without_the_password_and_hides_it_from_ps(tmp_path):
    server = EmbeddedValkey(tmp_path)
    await server.start()
    try:
        password = (tmp_path / "valkey.password").read_text().strip()
        assert oct(os.stat(tmp_path / "valkey.password").st_mode & 0o777) == "0o600"
        assert password in server.url
        assert password not in command_line(server.process.pid)
        anonymous = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError):
            await anonymous.set("sophia:cache:planted", b"forged")
        await anonymous.aclose()
        trusted = redis.Redis.from_url(server.url)
        assert await trusted.ping() is True
        await trusted.aclose()
    finally:
        await server.stop()


async def test_nats_refuses_a_client_without_the_password_and_hides_it_from_ps(tmp_path):
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        password = (tmp_path / "nats.password").read_text().strip()
        assert oct(os.stat(tmp_path / "nats.password").st_mode & 0o777) == "0o600"
        assert password not in command_line(server.process.pid)
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
        client = await nats.connect(server.url, allow_reconnect=False)
        assert (await client.jetstream().account_info()).streams == 0
        await client.close()
    finally:
        await server.stop()


async def test_a_restarted_engine_keeps_its_password(tmp_path):
    first = EmbeddedValkey(tmp_path)
    url = first.url
    assert EmbeddedValkey(tmp_path).url.split("@")[0] == url.split("@")[0]


async def test_nats_flushes_to_disk_as_often_as_it_is_told(tmp_path):
    server = EmbeddedNats(tmp_path, sync_interval="always")
    await server.start()
    try:
        client = await nats.connect(server.url, allow_reconnect=False)
        await client.close()
        assert 'sync_interval: "always"' in (tmp_path / "nats" / "nats.conf").read_text()
    finally:
        await server.stop()


def test_a_sync_interval_nats_would_not_read_is_refused_by_the_settings():
    from pydantic import ValidationError

    from sophia.shared.settings import Settings

    assert Settings(nats_sync_interval="500ms").nats_sync_interval == "500ms"
    with pytest.raises(ValidationError, match="nats_sync_interval"):
        Settings(nats_sync_interval="soon")
