"""What the gateway's tests share: the gateway served on a free port, and an SDK client on it
with a bearer credential, in either protocol era."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sophia.engines.process import free_port
from sophia.mcp_gateway.server import create_app
from sophia.shared.settings import Settings

ERAS = ["legacy", "2026-07-28"]
"""The SDK client's `mode` for each era: 2025-11-25 (`initialize`) and 2026-07-28."""


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The gateway on a free loopback port, for the duration; its /mcp URL."""
    port = free_port("127.0.0.1")
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", loop="asyncio", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def connected(url: str, secret: str, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client
