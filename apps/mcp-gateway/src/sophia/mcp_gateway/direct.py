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
one raises pydantic's `ValidationError`); whatever else the upstream answered (a JSON-RPC error at
any HTTP status, an HTTP error page, a redirect, a body that is not JSON or answers another id) is
`Refused`, a tool error for the model; no connection, a dropped one, or an event stream that ends
before the answer is `DirectFailure`, which `Upstream` counts as an outage. Numbers are parsed as
the SDK parses them (pydantic's parser: an integer past 64 bits stays exact).
"""

from __future__ import annotations

import itertools
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import mcp_types as types
from aiohttp.http_exceptions import HttpProcessingError
from mcp.shared.inbound import encode_header_value, x_mcp_header_map
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from sophia.mcp_gateway import wire

ERA = "2026-07-28"
"""The protocol era whose requests stand alone: the one the lean paths serve."""
CLIENT_INFO = types.Implementation(name="sophia-mcp-gateway", version="0.1.0")
"""Who the gateway says it is to upstreams, on either path."""
CLIENT_META = {
    PROTOCOL_VERSION_META_KEY: ERA,
    CLIENT_INFO_META_KEY: CLIENT_INFO.model_dump(mode="json", exclude_none=True),
    CLIENT_CAPABILITIES_META_KEY: {},
}
"""The per-request envelope of 2026-07-28, as the gateway's SDK client sends it."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
POOL_SIZE = 64
"""Connections kept to one upstream; more calls at once wait for one."""


class DirectFailure(Exception):
    """The upstream could not be reached, dropped the connection, or cut its event stream short:
    an outage."""


class Refused(Exception):
    """The upstream answered, but not with a result: its JSON-RPC error's message, or what was
    wrong with the answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def env_proxy(url: str) -> str | None:
    """`HTTP_PROXY` / `HTTPS_PROXY` for `url`'s scheme unless `NO_PROXY` exempts its host."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def schema_needs_headers(schema: Mapping[str, Any] | None) -> bool:
    """Whether a tool's input schema maps any argument to an `Mcp-Param-*` header (the SDK's
    client sends those; the direct path does not)."""
    return schema is not None and bool(x_mcp_header_map(schema))


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
        self.proxy = env_proxy(url)
        """The proxy the environment names for `url` (as the SDK's httpx client honours it), read
        once: aiohttp's `trust_env` reads it again on every request, which halved the calls a
        CPU-second."""
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    async def call(self, tool_name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """The upstream's answer; `Refused` or `DirectFailure` (the caller bounds the time)."""
        if self._closed:
            raise DirectFailure("the upstream is closed")
        request_id = next(self._ids)
        params = {"name": tool_name, "arguments": arguments, "_meta": CLIENT_META}
        body = wire.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
        headers = {**self.headers, "MCP-Name": encode_header_value(tool_name)}
        try:
            async with self._session().post(
                self.url, data=body, headers=headers, allow_redirects=False, proxy=self.proxy
            ) as response:
                status, kind = response.status, response.content_type
                if kind == "text/event-stream":
                    message = await _from_stream(response.content, request_id)
                elif kind == "application/json":
                    message = _parse(await _body(response))
                else:
                    raise Refused(f"HTTP {status} with {kind or 'no content type'}, not an MCP answer")
        except (aiohttp.ClientError, HttpProcessingError, OSError) as error:
            raise DirectFailure(str(error) or type(error).__name__) from None
        return _result(message, status, request_id)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, enable_cleanup_closed=True)
            self._http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self._http

    async def close(self) -> None:
        """Close the pool; a call after this fails (a call still under way ends with it)."""
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None


async def _body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, refused past `MAX_ANSWER_BYTES`."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        raise Refused(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    return b"".join([chunk async for chunk in _chunks(response.content)])


async def _chunks(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body as it arrives, refused once it passes `MAX_ANSWER_BYTES`."""
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise Refused(f"the answer is over {MAX_ANSWER_BYTES} bytes")
        yield chunk


def _parse(data: bytes | bytearray) -> Any:
    try:
        return wire.loads(data)
    except ValueError:
        raise Refused("the answer is not JSON") from None


async def _from_stream(stream: aiohttp.StreamReader, request_id: int) -> Any:
    """The JSON-RPC message for `request_id` from an SSE stream, its lines of any length (its
    notifications are passed over: a direct call asks for no progress)."""
    pending = bytearray()
    data: list[bytes] = []
    async for chunk in _chunks(stream):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end]).rstrip(b"\r")
            del pending[: end + 1]
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif not line and data:  # an event ends
                message = _parse(b"\n".join(data))
                data = []
                if isinstance(message, dict) and message.get("id") == request_id:
                    return message
    raise DirectFailure("the event stream ended without the answer")


def _result(message: Any, status: int, request_id: int) -> types.CallToolResult:
    if not isinstance(message, dict) or message.get("id") not in (request_id, None):
        raise Refused(f"HTTP {status} with no answer to the call")
    error = message.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        raise Refused(error["message"])
    if status >= 300 or "result" not in message:
        raise Refused(f"HTTP {status} with no answer to the call")
    return types.CallToolResult.model_validate(message["result"])  # pydantic's ValidationError if not
