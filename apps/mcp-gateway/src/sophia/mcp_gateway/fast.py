"""The gateway's lean path for the request agents send most, a plain 2026-07-28 `tools/call`
(docs/decisions/0007-mcp-lean-calls.md).

In that era a POST carries one request that stands alone, and the SDK's server answers it through
machinery built for every method and both eras (a connection and a kernel per request, the
middleware chain, the OpenTelemetry span). `PlainCalls` answers the one request itself, with the
SDK's own checks in the SDK's order: Host and Origin, `Accept`, the JSON-RPC envelope, routing
headers that appear twice, the per-request `_meta` and its agreement with the headers (the SDK's
`classify_inbound_request`), the request's surface validation for the era, `Mcp-Param-*` headers
against the tool's input schema; then the router's call, the result shaped by the era's surface,
`resultType`, the `serverInfo` stamp, and an exception mapped as the SDK maps it.

Whatever it does not take whole goes to the SDK unchanged, before anything has run: another
method or era, a body over 1 MiB (`notices.PEEK_BYTES`) or not JSON, any check that fails (the
SDK then answers its error), a tool this caller may not call (the SDK answers invalid params), and
a call asking for progress (`ProgressAware` streams it). `SOPHIA_MCP_LEAN_CALLS=false` sends
everything to the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, SERVER_INFO_META_KEY
from mcp_types import methods as surfaces
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia.mcp_gateway import wire
from sophia.mcp_gateway.auth import CALLER_KEY
from sophia.mcp_gateway.direct import ERA
from sophia.mcp_gateway.metrics import LEAN_CALLS
from sophia.mcp_gateway.notices import PROGRESS_TOKEN, read_body, replaying
from sophia.mcp_gateway.providers import Caller
from sophia.mcp_gateway.router import Router, UnknownTool
from sophia.shared.logging import get_logger

log = get_logger(__name__)

METHOD = "tools/call"
JSON_HEADERS = [(b"content-type", b"application/json")]
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower().encode()


class PlainCalls:
    """ASGI in front of the SDK's transport at `/mcp`: answers plain 2026-07-28 `tools/call`s
    itself and hands every other request to `sdk` with its body untouched."""

    def __init__(
        self, sdk: ASGIApp, router: Router, server: Server[Any], security: TransportSecuritySettings
    ) -> None:
        self.sdk = sdk
        self.router = router
        self.server = server
        self.security = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _routed_here(scope["headers"]):
            await self.sdk(scope, receive, send)
            return
        read, body = await read_body(receive)
        if body is None or not await self._answered(scope, body, send):
            await self.sdk(scope, replaying(read, receive), send)

    async def _answered(self, scope: Scope, body: bytes, send: Send) -> bool:
        """Whether the call was taken here (and answered); False before anything ran."""
        request = Request(scope)
        if await self.security.validate_request(request, is_post=True) is not None:
            return False
        if not check_accept_headers(request)[0]:
            return False
        call = _plain_call(body)
        if call is None or find_duplicated_routing_header(request.headers.items()) is not None:
            return False
        decoded, request_id, params = call
        verdict = classify_inbound_request(decoded, headers=dict(request.headers))
        if not isinstance(verdict, InboundModernRoute) or verdict.protocol_version != ERA:
            return False
        try:
            surfaces.validate_client_request(METHOD, ERA, params)
        except (ValidationError, ValueError, KeyError):
            return False
        name, arguments = params["name"], params.get("arguments") or {}
        if not self._headers_agree(name, arguments, scope["headers"], request):
            return False
        caller = scope.get(CALLER_KEY)
        if not isinstance(caller, Caller):
            return False
        try:
            await self.router.owner(name, caller)
        except Exception:  # UnknownTool (invalid params), or the listing failed: nothing ran yet
            return False  # the SDK answers it, as for any call it routes
        LEAN_CALLS.inc()
        await send_answer(send, request_id, await self._result(name, arguments, caller))
        return True

    def _headers_agree(
        self, name: str, arguments: Mapping[str, Any], headers: list[tuple[bytes, bytes]], request: Request
    ) -> bool:
        if not arguments and not any(header.startswith(_PARAM_PREFIX) for header, _ in headers):
            return True
        schema = self.router.schemas.get(name)
        return schema is None or validate_mcp_param_headers(schema, arguments, request.headers) is None

    async def _result(self, name: str, arguments: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """`{"result": ...}` or `{"error": ...}`, shaped as the SDK's server shapes them."""
        try:
            called = await self.router.call_tool(name, arguments, caller)
        except UnknownTool as unknown:  # gone since `owner` found it: as the SDK's handler says it
            return _error(MCPError(INVALID_PARAMS, str(unknown)))
        except Exception as error:  # what the SDK's server does with a handler's exception
            return _error(error)
        dumped = called.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            result = surfaces.serialize_server_result(METHOD, ERA, dumped)
        except ValidationError:
            log.exception("mcp_invalid_result", tool=name)
            return _error(MCPError(INTERNAL_ERROR, "Handler returned an invalid result"))
        result.setdefault("resultType", "complete")
        meta = result.get("_meta")
        if meta is None:
            result["_meta"] = {SERVER_INFO_META_KEY: self.server.server_info_stamp}
        elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
            result["_meta"] = {**meta, SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return {"result": result}


def _error(error: Exception) -> dict[str, Any]:
    return {"error": modern_error_data(error).model_dump(by_alias=True, exclude_none=True)}


def _routed_here(headers: list[tuple[bytes, bytes]]) -> bool:
    """A 2026-07-28 `tools/call` by its headers (the body is checked against them later)."""
    era = method = False
    for name, value in headers:
        if name == b"mcp-protocol-version":
            era = value == ERA.encode()
        elif name == b"mcp-method":
            method = value == METHOD.encode()
    return era and method


def _plain_call(body: bytes) -> tuple[dict[str, Any], int | str, dict[str, Any]] | None:
    """The request, its id and its params if the body is one JSON-RPC `tools/call` that does
    not name a progress token anywhere; else None."""
    if PROGRESS_TOKEN in body:  # as `ProgressAware` picks the streaming transport
        return None
    try:
        decoded = wire.loads(body)  # integers past 64 bits exact, as the SDK's json.loads
    except ValueError:
        return None
    if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0" or decoded.get("method") != METHOD:
        return None
    request_id, params = decoded.get("id"), decoded.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not isinstance(params.get("name"), str):
        return None
    return decoded, request_id, params


async def send_answer(send: Send, request_id: int | str, outcome: dict[str, Any]) -> None:
    status = 200
    if "error" in outcome:
        status = ERROR_CODE_HTTP_STATUS.get(outcome["error"]["code"], 200)
    body = wire.dumps({"jsonrpc": "2.0", "id": request_id, **outcome})
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
