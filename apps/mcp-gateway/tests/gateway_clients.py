"""What the gateway's tests share: the gateway served on a free port, and an SDK client on it
with a bearer credential, in either protocol era."""

from __future__ import annotations

import asyncio
import contextlib
import socket
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


class PromptServer(uvicorn.Server):
    """uvicorn's `Server`, stopped at once by `stop()`. uvicorn's own loop looks at `should_exit`
    every 0.1 s, and its shutdown sleeps 0.1 s for the connections to notice before it waits for
    them: a sixth of a second of every test that serves the gateway. The shutdown's steps are
    uvicorn's, in its order (the gateway's lifespan last), waiting on the connections themselves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers (Date), as uvicorn's first tick does
        while not self.should_exit:  # set by `stop()`, or by uvicorn's own SIGINT/SIGTERM handlers
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            await asyncio.sleep(0.005)  # as uvicorn: no time limit (a second Ctrl-C cuts it)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The gateway on a free loopback port, for the duration; its /mcp URL."""
    port = free_port("127.0.0.1")
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="asyncio",
        lifespan="on",
        proxy_headers=False,  # as `python -m sophia.mcp_gateway` runs it
    )
    server = PromptServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.stop()
        await task


@asynccontextmanager
async def connected(url: str, secret: str, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client
