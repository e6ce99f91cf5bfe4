"""SIGTERM drains a real server: the request in flight finishes and is stored, new ones are refused.

Runs `python -m sophia.api.server` under each ASGI server the settings allow, with one worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
from live_server import live_server

pytestmark = pytest.mark.chaos

GRACE_S = 15.0
LINES = 20_000
LINES_PER_CHUNK = 200


def ndjson_chunks(source_system: str) -> list[bytes]:
    lines = [
        orjson.dumps(
            {
                "source_system": source_system,
                "kind": "deal",
                "external_id": f"d-{number}",
                "data": {"amount": str(number)},
            }
        )
        + b"\n"
        for number in range(LINES)
    ]
    return [b"".join(lines[start : start + LINES_PER_CHUNK]) for start in range(0, LINES, LINES_PER_CHUNK)]


async def refuses_connections(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            await http.get(f"{url}/healthz")
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


async def wait_until_refused(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await refuses_connections(url):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
async def test_sigterm_lets_the_bulk_ingest_in_flight_finish_then_exits_cleanly(
    settings, database, api_keys, tmp_path, server
):
    source_system = "pg" + uuid.uuid4().hex[:10]
    chunks = ndjson_chunks(source_system)
    halfway = asyncio.Event()
    release = asyncio.Event()

    async def slow_body():
        for index, chunk in enumerate(chunks):
            if index == len(chunks) // 2:
                halfway.set()
                await release.wait()
            yield chunk
            await asyncio.sleep(0.001)

    async with live_server(settings, server, tmp_path, grace_s=GRACE_S) as live:
        headers = {"Authorization": f"Bearer {api_keys['write']}", "Content-Type": "application/x-ndjson"}
        async with httpx.AsyncClient(base_url=live.url, timeout=GRACE_S * 2) as http:
            ingest = asyncio.create_task(
                http.post("/api/v1/records:bulk", content=slow_body(), headers=headers)
            )
            await asyncio.wait_for(halfway.wait(), 30)
            live.terminate()
            terminated_at = time.monotonic()
            refused_while_draining = await wait_until_refused(live.url, timeout_s=3.0)
            release.set()
            response = await ingest
        exit_code = await live.wait_exit(GRACE_S + 5)
        exit_after_s = time.monotonic() - terminated_at

        assert response.status_code == 200, response.text
        assert response.json() == {"received": LINES, "created": LINES, "updated": 0}
        async with database.connection() as connection:
            stored = await connection.fetchval(
                "SELECT count(*) FROM sophia_core.unified_data_catalog WHERE source_system = $1",
                source_system,
            )
        assert stored == LINES
        assert refused_while_draining, "a new connection was still served after SIGTERM"
        assert await refuses_connections(live.url)
        assert "api_draining" in live.logs(), "the lifespan's shutdown did not run"
        if exit_code != 0 or exit_after_s >= GRACE_S:
            raise AssertionError(f"exit status {exit_code} after {exit_after_s:.1f}s (grace {GRACE_S}s)")
