"""The real-time process killed or stopped under its clients: they reconnect and resume with no gap."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from record_events import publish, record_event
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sophia.engines.process import free_port

pytestmark = pytest.mark.chaos


@contextmanager
def realtime_process(settings, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "SOPHIA_DATABASE_URL": settings.database_url,
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_DATA_DIR": str(settings.data_dir),
        "SOPHIA_EVENTS_STREAM_PREFIX": settings.events_stream_prefix,
        "SOPHIA_EVENTS_MAX_BYTES": str(settings.events_max_bytes),
        "SOPHIA_REALTIME_PORT": str(port),
        "SOPHIA_LOG_JSON": "false",
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sophia.realtime"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def healthy(port: int) -> None:
    async with httpx.AsyncClient(timeout=1.0) as http, asyncio.timeout(30):
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def test_kill_9_under_a_client_then_a_restart_it_resumes_with_no_gap_and_sigterm_closes_1012(
    own_streams, api_keys, tmp_path
):
    port = free_port("127.0.0.1")
    url = f"ws://127.0.0.1:{port}/ws"
    headers = {"Authorization": f"Bearer {api_keys['read']}"}
    subscribe = {"op": "subscribe", "id": 1, "channel": "records:chaos"}
    with realtime_process(own_streams, port, tmp_path / "realtime.log") as process:
        await healthy(port)
        async with connect(url, additional_headers=headers) as client:
            await client.send(orjson.dumps(subscribe).decode())
            assert orjson.loads(await client.recv())["type"] == "subscribed"
            await publish(own_streams, [record_event("chaos", "deal", n) for n in range(2)])
            seen = [orjson.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(2)]
            process.send_signal(signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 10)
    await publish(own_streams, [record_event("chaos", "deal", n) for n in range(2, 5)])  # while it is down
    with realtime_process(own_streams, port, tmp_path / "realtime.log") as process:
        await healthy(port)
        async with connect(url, additional_headers=headers) as client:
            await client.send(orjson.dumps({**subscribe, "since": seen[-1]["position"]}).decode())
            resumed = orjson.loads(await client.recv())
            assert resumed["recovered"] is True
            await publish(own_streams, [record_event("chaos", "deal", 5)])
            seen += [orjson.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(4)]
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 10)
        assert process.wait(15) == 0
    assert [frame["event"]["payload"]["n"] for frame in seen] == [0, 1, 2, 3, 4, 5]
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012
