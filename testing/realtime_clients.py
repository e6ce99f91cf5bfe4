"""WebSocket clients of a real-time service under test: connect with a key, subscribe, read frames."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from sophia.realtime.service import RealtimeService


def ws(service: RealtimeService, secret: str | None) -> Any:
    """A connection to `service`'s /ws with `secret` as its key (`async with`)."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return connect(f"ws://127.0.0.1:{service.port}/ws", additional_headers=headers, open_timeout=5)


def narrow_client(service: RealtimeService, secret: str) -> Any:
    """A client whose socket takes at most 4 KiB in flight: a slow reader fills up at once."""
    small = socket.socket()
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
    small.connect(("127.0.0.1", service.port))
    headers = {"Authorization": f"Bearer {secret}"}
    return connect(f"ws://127.0.0.1:{service.port}/ws", additional_headers=headers, sock=small)


async def frame(client: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(client.recv(), timeout_s))


async def subscribe(
    client: ClientConnection, channel: str, since: dict | None = None, frame_id: int = 1
) -> dict[str, Any]:
    """The `subscribed` answer to a subscription to `channel` (from `since` if given)."""
    request: dict[str, Any] = {"op": "subscribe", "id": frame_id, "channel": channel}
    if since is not None:
        request["since"] = since
    await client.send(orjson.dumps(request).decode())
    answer = await frame(client)
    assert answer["type"] == "subscribed", answer
    return answer


async def publications(client: ClientConnection, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The next `count` frames, each a publication."""
    got = [await frame(client, timeout_s) for _ in range(count)]
    assert all(item["type"] == "publication" for item in got), got
    return got
