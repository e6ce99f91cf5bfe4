"""A bare broadcast server as a pure ASGI app (no framework), for granian, for bench/ws_servers.py.

    granian --interface asgi --workers 1 --loop uvloop --working-dir bench/ws granian_app:app

ASGI has no broadcast: the app keeps each client's `send`; a round calls every one of them (granian
starts the write when `send` is called and returns its future), then awaits those futures, so
granian's own flow control paces the rounds. That is faster than `asyncio.gather` (a task per
send) and far faster than awaiting each send before the next call (a loop round trip per client).
Each client's connection waits in its handler on `receive()` until it disconnects.
"""

from __future__ import annotations

import contextlib
from typing import Any

import rounds

Message = dict[str, Any]
Receive = Any
Send = Any


class BroadcastApp:
    """ASGI: clients on /ws, the control connection on /control, nothing else."""

    def __init__(self) -> None:
        self.clients: set[Send] = set()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["path"] == rounds.CONTROL_PATH:
            await self.control(receive, send)
        elif scope["path"] == rounds.CLIENTS_PATH:
            await self.client(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def client(self, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        self.clients.add(send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            self.clients.discard(send)

    async def control(self, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            done = await rounds.broadcast(rounds.Command.parse(message["text"]), self.send_round)
            await send({"type": "websocket.send", "text": done})

    async def send_round(self, frame: str) -> None:
        message = {"type": "websocket.send", "text": frame}
        pending = [send(message) for send in self.clients]  # granian starts each send when called
        for sent in pending:
            with contextlib.suppress(OSError):  # ASGI's error for a client that left mid-round
                await sent


app = BroadcastApp()
