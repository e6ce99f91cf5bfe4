"""What the gateway tells its clients besides answers: that the tool list changed, and how far a
tool call has got.

- **List changes.** A 2026-07-28 client that sends `subscriptions/listen` (with
  `toolsListChanged`) holds a stream on which the gateway sends `notifications/tools/list_changed`
  whenever an upstream says its tools changed, or a new upstreams file (or an admin API change) is
  applied. Every gateway process has its own sessions to the upstreams and watches the same file,
  so whichever process holds a client's stream hears of the change: no store is shared. Changes
  close together are sent once. 2025-11-25 clients have no such stream from a stateless server
  (theirs is a GET stream bound to a session): they see changes at their next `tools/list`.
- **Progress.** A `tools/call` whose `_meta` carries a `progressToken` is answered as a stream
  (`text/event-stream`) when progress comes before the result, carrying the upstream's progress
  notifications under the client's token (the gateway's own token goes upstream: ids and tokens
  are the gateway's on each leg). Every other request keeps the plain JSON answer, which is
  cheaper: `ProgressAware` reads the request body (bounded) to pick the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROGRESS_TOKEN = b'"progressToken"'
PEEK_BYTES = 1 << 20
"""Most of a body read to look for a progress token (or a plain call, `fast.PlainCalls`); a longer
one is answered in JSON by the SDK, which limits bodies itself."""


class ListChanges:
    """The listen streams' source of `tools/list_changed`: `changed()` from anywhere in the event
    loop (synchronous, so the upstreams' callbacks can call it); a burst is published once."""

    def __init__(self, max_listeners: int = 1024, per_caller: int = 16) -> None:
        self.bus = InMemorySubscriptionBus()
        self.handler = ListenHandler(self.bus, max_subscriptions=max_listeners)
        """The SDK's `subscriptions/listen` handler, behind `listen`."""
        self.per_caller = per_caller
        self.held: dict[str, int] = {}
        """Open streams by caller (only callers holding one)."""
        self._pending: asyncio.Task[None] | None = None

    async def listen(
        self, caller: str, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """One listen stream for `caller` (what rate limits count by: a key's id, a token's
        subject), refused before its acknowledgement when the caller holds `per_caller` already."""
        held = self.held.get(caller, 0)
        if held >= self.per_caller:
            raise MCPError(
                INVALID_REQUEST,
                f"This caller holds {held} subscriptions/listen streams at this gateway process, the most "
                "one caller may (SOPHIA_MCP_LISTEN_PER_KEY); end one before listening again.",
            )
        self.held[caller] = held + 1
        try:
            return await self.handler(ctx, params)
        finally:
            left = self.held.pop(caller) - 1
            if left:
                self.held[caller] = left

    def changed(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._publish(), name="mcp-list-changed")

    async def _publish(self) -> None:
        await asyncio.sleep(0)  # changes made in the same turn of the loop go out as one
        await self.bus.publish(ToolsListChanged())

    def close(self) -> None:
        """End every listen stream gracefully (its clients listen again, at another process if
        this one stops) and publish no more."""
        if self._pending is not None:
            self._pending.cancel()
        self.handler.close()


class ProgressAware:
    """Hands a POST whose body asks for progress to `streaming` (an SSE-capable transport), every
    other request to `plain` (JSON answers); the body, read here, is given to either unchanged."""

    def __init__(self, plain: ASGIApp, streaming: ASGIApp) -> None:
        self.plain, self.streaming = plain, streaming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.plain(scope, receive, send)
            return
        read, body = await read_body(receive)
        app = self.streaming if body is not None and PROGRESS_TOKEN in body else self.plain
        await app(scope, replaying(read, receive), send)


async def read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages read, and the body they make: None when it passes `PEEK_BYTES` (the rest is
    left unread) or the client left. Hand `replaying(read, receive)` to whoever answers."""
    read: list[Message] = []
    size, more = 0, True
    while more:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return read, None  # the client left: whoever answers hears it
        size += len(message.get("body", b""))
        if size > PEEK_BYTES:
            return read, None
        more = message.get("more_body", False)
    return read, b"".join(message.get("body", b"") for message in read)


def replaying(read: list[Message], receive: Receive) -> Receive:
    """`receive` as if nothing had been read: the messages `read` first."""

    async def replay() -> Message:
        return read.pop(0) if read else await receive()

    return replay
