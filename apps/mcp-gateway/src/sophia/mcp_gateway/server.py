"""The gateway assembled: one Streamable HTTP endpoint, `/mcp`, served by the official SDK's
low-level `Server` in stateless mode (any gateway process answers any request: no session to
stick to, no session store), both protocol eras (2026-07-28 per-request envelopes; 2025-11-25
`initialize`), JSON responses (streams for progress and `subscriptions/listen`:
`sophia.mcp_gateway.notices`). In front of it: Host/Origin checks (the SDK's DNS-rebinding
protection), keys or JWTs and a rate per caller (`auth.GatewayAuth`). Behind it: the router
between Sophia's own tools and the upstreams'.

`python -m sophia.mcp_gateway` runs it (uvicorn; `sophia up` starts it beside the API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sophia.cache import CacheConfig, TieredCache
from sophia.cache.connection import RedisConnection
from sophia.database import Database
from sophia.database.verifier import KeyVerifier
from sophia.mcp_gateway import admin, find_tools
from sophia.mcp_gateway.audit import AuditTrail
from sophia.mcp_gateway.auth import CALLER_KEY, GatewayAuth, JwtVerifier
from sophia.mcp_gateway.config import ConfigWatcher, GatewayConfig, load
from sophia.mcp_gateway.fast import PlainCalls
from sophia.mcp_gateway.notices import ListChanges, ProgressAware
from sophia.mcp_gateway.providers import PROGRESS, Caller, Progress, Provider
from sophia.mcp_gateway.router import Router, UnknownTool
from sophia.mcp_gateway.sophia_tools import Embed, SophiaTools
from sophia.mcp_gateway.upstreams import Upstreams
from sophia.ml.models import Models
from sophia.shared.logging import configure_logging, get_logger
from sophia.shared.metrics import render_latest
from sophia.shared.process import settle_heap
from sophia.shared.settings import Settings

log = get_logger(__name__)

NAME = "sophia-gateway"
VERSION = "0.1.0"
INSTRUCTIONS = (
    "Sophia's business records (CRM deals and contacts, calls, messages, tickets) and their analytics, "
    "beside the tools of the MCP servers this gateway federates (named <prefix>__<tool>). Results are "
    "sized for your context: follow `next_cursor` for more."
)


RECORD_URI_PREFIX = "sophia://records/"
RECORD_TEMPLATE = types.ResourceTemplate(
    name="record",
    title="A catalog record",
    uri_template=RECORD_URI_PREFIX + "{id}",
    description="One record of Sophia's catalog by id, as the get_record tool answers it.",
    mime_type="application/json",
)
MCP_METHODS = ["GET", "POST", "DELETE"]
RESOURCE_NOT_FOUND = -32002
"""The spec's code for a resource that does not exist."""
UPSTREAMS_POLL_S = 1.0
"""How often the upstreams file is read again for a change (read when the gateway starts)."""


def _caller(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = request.scope.get(CALLER_KEY) if isinstance(request, Request) else None
    if not isinstance(caller, Caller):  # the auth middleware stands in front of every /mcp request
        raise MCPError(INTERNAL_ERROR, "The request reached the gateway without a verified caller.")
    return caller


def _progress_to(ctx: ServerRequestContext[Any, Any], token: str | int) -> Progress:
    """Sends a provider's progress to the client under the token the client chose."""

    async def report(progress: float, total: float | None, message: str | None) -> None:
        related = str(ctx.request_id) if ctx.request_id is not None else None
        await ctx.session.send_progress_notification(token, progress, total, message, related)

    return report


def shortlist(tools: list[types.Tool], most: int) -> list[types.Tool]:
    """At most `most` tools, `find_tools` first among them when some are left out: what an agent's
    context takes in, the rest found on demand."""
    if len(tools) <= most:
        return tools
    finder = [tool for tool in tools if tool.name == find_tools.NAME]
    return finder + [tool for tool in tools if tool.name != find_tools.NAME][: most - len(finder)]


def mcp_server(router: Router, list_max_tools: int, changes: ListChanges) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=shortlist(await router.list_tools(_caller(ctx)), list_max_tools))

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        token = ctx.meta.get("progress_token") if ctx.meta else None
        reporting = PROGRESS.set(_progress_to(ctx, token) if token is not None else None)
        try:
            return await router.call_tool(params.name, params.arguments or {}, _caller(ctx))
        except UnknownTool as unknown:
            raise MCPError(INVALID_PARAMS, str(unknown)) from None
        finally:
            PROGRESS.reset(reporting)

    async def list_resource_templates(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[RECORD_TEMPLATE])

    async def list_resources(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])  # millions of records: by template, not by list

    async def read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        """`sophia://records/<id>`: the record as `get_record` answers it (routed, audited, views
        obeyed); a resource of any other shape, or a record that is not there, is an error."""
        uri = str(params.uri)
        record_id = uri.removeprefix(RECORD_URI_PREFIX)
        if not uri.startswith(RECORD_URI_PREFIX) or not record_id:
            raise MCPError(
                INVALID_PARAMS, f"Unknown resource {uri!r}: records are {RECORD_TEMPLATE.uri_template}."
            )
        try:
            result = await router.call_tool("get_record", {"id": record_id}, _caller(ctx))
        except UnknownTool:
            raise MCPError(INVALID_PARAMS, "Records are not readable with this key (its view).") from None
        text = next((block.text for block in result.content if isinstance(block, types.TextContent)), "")
        if result.is_error:
            raise MCPError(RESOURCE_NOT_FOUND, f"{uri}: {text}")
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=text)
        return types.ReadResourceResult(contents=[contents])

    async def listen(
        ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        return await changes.listen(_caller(ctx).key_id, ctx, params)

    return Server(
        NAME,
        version=VERSION,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscriptions_listen=listen,
        get_tool_input_schema=router.schemas.get,
    )


async def _embedder(settings: Settings, stack: AsyncExitStack) -> Embed | None:
    """With `SOPHIA_ML_ENABLED` (and Redis for the embeddings' cache), `semantic_search` ranks by
    meaning too, with the API's model; without, it searches words only and says so."""
    if not (settings.ml_enabled and settings.redis_url):
        return None
    redis = await stack.enter_async_context(RedisConnection.from_settings(settings))
    cache = await stack.enter_async_context(
        TieredCache(redis.client, CacheConfig.from_settings(settings), name="mcp", hears_writes=False)
    )
    models = await stack.enter_async_context(Models.load(settings, cache))

    async def embed(texts: list[str]) -> list[list[float]]:
        vectors = await models.embeddings.embed(texts, timeout_s=settings.ml_timeout_s)
        return [[float(value) for value in vector] for vector in vectors]

    return embed


def _listed(text: str) -> list[str]:
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def create_app(settings: Settings | None = None, extra: Sequence[Provider] = ()) -> Starlette:
    """The gateway's ASGI app; `extra` providers are listed after Sophia's own (the upstreams)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    if not settings.database_url:
        raise RuntimeError("SOPHIA_DATABASE_URL must be set (`sophia up` sets it)")
    providers: list[Provider] = []
    federated: list[Upstreams] = []
    configured: list[GatewayConfig] = [GatewayConfig()]
    """The upstreams file as last applied."""

    def everyone() -> list[Provider]:
        """Sophia's tools, `find_tools`, `extra`, then the upstreams of the file as it is now."""
        return [*providers, *(upstream for upstreams in federated for upstream in upstreams.providers())]

    router = Router(everyone, None, settings.mcp_call_timeout_s, lambda: configured[0].views)

    changes = ListChanges(per_caller=settings.mcp_listen_per_key)

    async def changed(config: GatewayConfig) -> None:
        """A new upstreams file (from the watcher or the admin API): applied, then its views; the
        clients listening hear that the list changed."""
        await federated[0].apply(config)
        configured[0] = config
        router.forget()
        changes.changed()

    server = mcp_server(router, settings.mcp_list_max_tools, changes)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_listed(settings.mcp_allowed_hosts),
        allowed_origins=_listed(settings.mcp_allowed_origins),
    )
    # Both stateless, on the same server: JSON answers, and streams for calls asking for progress.
    managers = [
        StreamableHTTPSessionManager(server, json_response=json, stateless=True, security_settings=security)
        for json in (True, False)
    ]
    database = Database(settings)
    keys = KeyVerifier.from_settings(database, settings, stale_if_error_s=settings.cache_stale_if_error_s)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await database.open(require_database=False)
            stack.push_async_callback(database.close, settings.shutdown_grace_s)
            router.audit = await stack.enter_async_context(AuditTrail(database))
            stack.callback(router.stop)
            embed = await _embedder(settings, stack)
            providers.append(SophiaTools(settings, database, embed))
            providers.append(find_tools.ToolFinder(router.list_tools, embed))
            providers.extend(extra)
            if settings.mcp_upstreams_file is not None:  # a bad file stops the start, naming the field
                configured[0] = load(settings.mcp_upstreams_file)
                upstreams = await stack.enter_async_context(Upstreams(configured[0], changes.changed))
                federated.append(upstreams)

                watcher = ConfigWatcher(
                    settings.mcp_upstreams_file, changed, configured[0], poll_s=UPSTREAMS_POLL_S
                )
                await stack.enter_async_context(watcher)
            for manager in managers:
                await stack.enter_async_context(manager.run())
            stack.callback(changes.close)  # first thing on the way out: listen streams end cleanly
            settle_heap()
            log.info("mcp_gateway_started", providers=[provider.name for provider in everyone()])
            yield
            log.info("mcp_gateway_draining")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def metrics(request: Request) -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    endpoint: Any = ProgressAware(*map(StreamableHTTPASGIApp, managers))
    if settings.mcp_lean_calls:  # plain 2026-07-28 calls answered here, the rest by the SDK
        endpoint = PlainCalls(endpoint, router, server, security)
    app = Starlette(
        routes=[
            Route("/mcp", endpoint, methods=MCP_METHODS),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            *admin.routes(settings.mcp_upstreams_file, lambda: federated[0] if federated else None, changed),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(
        GatewayAuth, keys=keys, tokens=JwtVerifier.from_settings(settings), rate_per_s=settings.mcp_rate_per_s
    )
    app.state.router = router
    return app
