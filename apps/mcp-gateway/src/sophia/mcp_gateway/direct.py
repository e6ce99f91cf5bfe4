"""The gateway's lean path to a 2026-07-28 upstream over Streamable HTTP: a `tools/call` is one
POST on a pooled keep-alive connection and one parse of its answer (docs/decisions/0007).

In that era a request stands alone (no session, no handshake), so a call needs nothing the SDK's
client keeps between requests. Its transport (a task and memory streams per POST over httpx2)
cost the gateway about as much CPU as everything else in a call; this one sends what the SDK's
client sends (the same headers, the same per-request `_meta`) and reads a JSON answer, or the SSE
stream a server may choose instead, up to the response with its id. The SDK's client is still the
one for listings, health checks, `subscriptions/listen`, 2025-11-25 upstreams, stdio commands and
calls that carry progress or `Mcp-Param-*` headers: `Upstream` picks (`DirectCalls.serves`).

Outcomes, as the SDK's client path has them: an answer is a `CallToolResult` (a result that is not
one raises pydantic's `ValidationError`); a JSON-RPC error (at any HTTP status) is `Refused`, a
tool error for the model; no connection, a dropped one, or an answer that is no JSON-RPC answer to
the call (an HTTP 5xx page, say) is `DirectFailure`, which `Upstream` counts as an outage.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import aiohttp
import mcp_types as types
import orjson

ERA = "2026-07-28"
CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": ERA,
    "io.modelcontextprotocol/clientInfo": {"name": "sophia-mcp-gateway", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
"""The per-request envelope of 2026-07-28, as the gateway's SDK client sends it."""
HEADER_PARAMETER = "x-mcp-header"
"""An input schema naming this maps arguments to `Mcp-Param-*` headers: the SDK's client sends them."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
POOL_SIZE = 64
"""Connections kept to one upstream; more calls at once wait for one."""


class DirectFailure(Exception):
    """The upstream could not be reached, dropped the connection, or answered something not MCP."""


class Refused(Exception):
    """The upstream answered the call with a JSON-RPC error; `message` is its own."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def schema_needs_headers(schema: Mapping[str, Any] | None) -> bool:
    """Whether a tool's input schema maps any argument to an `Mcp-Param-*` header."""
    return schema is not None and HEADER_PARAMETER.encode() in orjson.dumps(schema)


class DirectCalls:
    """`tools/call` to one upstream URL; one connection pool, opened on first use."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.url = url
        self.headers = {
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": ERA,
            "MCP-Method": "tools/call",
        }
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None

    async def call(self, tool_name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """The upstream's answer; `Refused` or `DirectFailure` (the caller bounds the time)."""
        request_id = next(self._ids)
        params = {"name": tool_name, "arguments": arguments, "_meta": CLIENT_META}
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
        headers = {**self.headers, "MCP-Name": tool_name}
        try:
            async with self._session().post(self.url, data=body, headers=headers) as response:
                status, kind = response.status, response.content_type
                if kind == "text/event-stream":
                    message = await _from_stream(response.content, request_id)
                elif kind == "application/json":
                    message = _parse(await response.content.read(MAX_ANSWER_BYTES + 1))
                else:
                    raise DirectFailure(f"HTTP {status} with {kind or 'no content type'}, not an MCP answer")
        except (aiohttp.ClientError, OSError) as error:
            raise DirectFailure(str(error) or type(error).__name__) from None
        return _result(message, status, request_id)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, enable_cleanup_closed=True)
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _parse(data: bytes) -> Any:
    if len(data) > MAX_ANSWER_BYTES:
        raise DirectFailure(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise DirectFailure("the answer is not JSON") from None


async def _from_stream(stream: aiohttp.StreamReader, request_id: int) -> Any:
    """The JSON-RPC message for `request_id` from an SSE stream (its notifications are passed over:
    a direct call asks for no progress)."""
    data: list[bytes] = []
    size = 0
    async for raw in stream:
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            chunk = line[5:].removeprefix(b" ")
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise DirectFailure(f"the answer is over {MAX_ANSWER_BYTES} bytes")
            data.append(chunk)
        elif not line and data:  # an event ends
            message = _parse(b"\n".join(data))
            data = []
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
    raise DirectFailure("the event stream ended without the answer")


def _result(message: Any, status: int, request_id: int) -> types.CallToolResult:
    if not isinstance(message, dict) or message.get("id") not in (request_id, None):
        raise DirectFailure(f"HTTP {status} with no answer to the call")
    error = message.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        raise Refused(error["message"])
    if status >= 300 or "result" not in message:
        raise DirectFailure(f"HTTP {status} with no answer to the call")
    return types.CallToolResult.model_validate(message["result"])  # pydantic's ValidationError if not
