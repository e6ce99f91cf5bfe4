"""The dashboard's pages and the fragments they swap in place (htmx), server-rendered with Jinja2.

| path | what | scope |
| --- | --- | --- |
| `GET /sign-in`, `POST /sign-in` | the sign-in form; an API key exchanged for a session cookie | none |
| `POST /sign-out` | ends the session, clears the cookie | signed in |
| `GET /` | the business view: tiles, pipeline, funnel, cohorts, trends, active deals, search | read |
| `GET /records/{id}` | one record: its data, labels, sentiment and history | read |
| `GET /ops` | the ops view: rates, latency, cache, outbox, lag, breakers, WebSockets, ML | admin |
| `GET /ui/analytics`, `/ui/deals`, `/ui/search`, `/ui/ops` | fragments the pages refresh | as their page |

Pages read PostgreSQL directly (the summaries, `active_deals_mv`, the catalog), not through the
API's cache: a fragment fetched because an event said something changed must show the change. The
pages' scripts (`static/dashboard.js`) subscribe to the real-time service and ask for fragments
again when an event says they moved. A page without a session answers 303 to `/sign-in` (a
fragment: 401 with `HX-Redirect`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qs, urlencode
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sophia.core.errors import Forbidden, NotFound, SophiaError, TooManyRequests, Unauthorized
from sophia.core.records import IDENTIFIER_PATTERN
from sophia.database import Database, analytics, audit, catalog, enrichment, sessions, views
from sophia.database.keys import ApiKey
from sophia.database.verifier import SCOPE_RANK, KeyVerifier
from sophia.shared.settings import Settings
from sophia.web.assets import vendored
from sophia.web.ops import OpsView
from sophia.web.session import (
    clear_session_cookie,
    cookie_secret,
    cross_site,
    set_session_cookie,
)

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 4096
"""The sign-in form holds a key and a path: anything longer is refused before it is parsed."""
DEALS_PAGE_SIZE = 25
MAX_DEALS_PAGE = 400
"""Offset pages of the active deals: the first 10,000 deals in any order (sort to reach others)."""
TRENDS_WEEKS = 26

Sort = Annotated[Literal["amount", "name", "stage", "close_date", "updated_at"], Query()]
Order = Annotated[Literal["asc", "desc"], Query()]
Page = Annotated[int, Query(ge=0, lt=MAX_DEALS_PAGE)]


def analytics_filters(
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
) -> analytics.Filters:
    """The business view's filters, as `/api/v1/analytics/*` takes them (an empty field: none)."""
    analytics.check_range(since, until)
    return analytics.Filters(since, until, source_system or None, owner or None, pipeline or None)


def deal_filters(
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
) -> analytics.Filters:
    """The active deals' filters: the business view's without the months."""
    return analytics_filters(None, None, source_system, owner, pipeline)


Where = Annotated[analytics.Filters, Depends(analytics_filters)]
DealsWhere = Annotated[analytics.Filters, Depends(deal_filters)]


class Platform(Protocol):
    """What the dashboard needs of the process it is mounted in (the API's state)."""

    settings: Settings
    database: Database
    keys: KeyVerifier


@dataclass(frozen=True, slots=True)
class SearchHit:
    record: dict[str, Any]
    score: float


Search = Callable[[Any, str, int], Awaitable[tuple[str, list[SearchHit]]]]
"""`search(state, query, k)`: the search mode (`hybrid` or `lexical`) and the best `k` records."""


class SignInNeeded(SophiaError):
    """No session, or one that ended: the page sends the browser to the sign-in form."""


class ShownAsPage(SophiaError):
    """A `Forbidden` or `NotFound` met by a page a browser navigated to: answered as an HTML page
    saying so (a fragment htmx asked for keeps the API's problem+json)."""

    def __init__(self, error: Forbidden | NotFound) -> None:
        super().__init__(error.detail)
        self.title = error.title
        self.status = 403 if isinstance(error, Forbidden) else 404


def _as_page(request: Request, error: Forbidden | NotFound) -> SophiaError:
    return error if request.headers.get("hx-request") else ShownAsPage(error)


def _number(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):  # a number as the catalog's JSON holds it ("64000.00")
        try:
            parsed = Decimal(value)
        except ArithmeticError:
            return value
        if not parsed.is_finite():
            return value
        value = parsed
    if isinstance(value, Decimal | float | int):
        number = float(value)
        if abs(number) >= 1_000_000:
            return f"{number / 1_000_000:,.1f} M"
        if abs(number) >= 10_000:
            return f"{number / 1_000:,.1f} k"
        return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"
    return str(value)


def _percent(value: object) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f} %"  # type: ignore[arg-type]


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "—" if value is None else str(value)


def _json_text(value: object) -> str:
    """JSON for an attribute (`data-weeks`), escaped there by the templates' autoescape. Not a
    `<script type="application/json">`: htmx drops every script of a fragment it swaps in while
    `allowScriptTags` is off (the pages' setting), and the charts lost their data on each refresh."""
    return orjson.dumps(value, default=_plain).decode()


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def highlight(text: str, query: str, width: int = 240) -> Markup:
    """`text` escaped, cut to `width` characters around the first word of `query` it holds, each
    occurrence of the query's words wrapped in `<mark>`."""
    words = sorted({word for word in re.findall(r"\w{2,}", query.lower())}, key=len, reverse=True)
    if not words:
        return escape(text[:width])
    pattern = re.compile("|".join(re.escape(word) for word in words), re.IGNORECASE)
    first = pattern.search(text)
    start = max(0, (first.start() if first else 0) - width // 3)
    window = text[start : start + width]
    parts: list[str] = ["…" if start else ""]
    end = 0
    for match in pattern.finditer(window):
        parts.append(str(escape(window[end : match.start()])))
        parts.append(f"<mark>{escape(match.group())}</mark>")
        end = match.end()
    parts.append(str(escape(window[end:])))
    parts.append("…" if start + width < len(text) else "")
    return Markup("".join(parts))  # noqa: S704 (every piece of text in it was escaped above)


def record_text(record: dict[str, Any]) -> str:
    """What a record says, for a search result: its string fields, longest first."""
    data = record.get("data")
    if not isinstance(data, dict):
        return ""
    texts = sorted((value for value in data.values() if isinstance(value, str)), key=len, reverse=True)
    return " · ".join(texts)


def record_title(record: dict[str, Any]) -> str:
    data = record.get("data")
    data = data if isinstance(data, dict) else {}
    for name in ("dealname", "name", "subject", "title"):
        if isinstance(data.get(name), str) and data[name]:
            return str(data[name])
    return f"{record.get('source_system')}/{record.get('kind')}/{record.get('external_id')}"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        number=_number, percent=_percent, when=_when, json_text=_json_text, highlight=highlight
    )
    env.globals.update(
        htmx=vendored("htmx.org") + "/htmx.min.js",
        uplot_js=vendored("uplot") + "/uPlot.iife.min.js",
        uplot_css=vendored("uplot") + "/uPlot.min.css",
        record_title=record_title,
        record_text=record_text,
    )
    return env


CONTENT_SECURITY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' {realtime}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def realtime_url(request: Request, settings: Settings) -> str:
    """The real-time service's /ws as this page's browser reaches it."""
    if settings.web_realtime_url:
        return settings.web_realtime_url
    scheme = "wss" if request.url.scheme == "https" else "ws"
    host = request.url.hostname or settings.realtime_host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.realtime_port}/ws"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this site, never another site (`//evil`, `/\\evil`)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and len(value) < 512:
        return value
    return "/"


def install(app: FastAPI, search: Search) -> None:
    """Add the dashboard's pages and fragments to `app`, whose state (`app.state.sophia`) is a
    `Platform`; `search` answers the search box."""
    env = environment()
    router = APIRouter(include_in_schema=False)
    ops_views: dict[int, OpsView] = {}

    def platform(request: Request) -> Platform:
        return request.app.state.sophia  # type: ignore[no-any-return]

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        state = platform(request)
        live = realtime_url(request, state.settings)
        html = env.get_template(name).render(request=request, realtime_url=live, **context)
        response = HTMLResponse(html, status_code=status)
        response.headers["content-security-policy"] = CONTENT_SECURITY.format(realtime=live)
        response.headers["cache-control"] = "no-store"
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "same-origin"
        return response

    async def signed_in(request: Request, scope: str = "read") -> ApiKey:
        secret = cookie_secret(request.scope)
        if secret is None or not sessions.SESSION_SHAPE.fullmatch(secret):
            raise SignInNeeded("Sign in with an API key.")
        client = request.client.host if request.client else ""
        try:
            key = await platform(request).keys.admit(secret, client)
        except Unauthorized as refused:
            raise SignInNeeded(refused.detail) from None
        if SCOPE_RANK[key.scope] < SCOPE_RANK[scope]:
            forbidden = Forbidden(
                f"This page needs a key with the {scope!r} scope; you signed in with {key.scope!r}."
            )
            raise _as_page(request, forbidden)
        return key

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    async def sign_in_needed(request: Request, error: Exception) -> Response:
        detail = error.detail if isinstance(error, SophiaError) else "Sign in."
        if request.headers.get("hx-request"):
            response: Response = Response(detail, status_code=401, headers={"HX-Redirect": "/sign-in"})
        else:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse("/sign-in?" + urlencode({"next": target}), status_code=303)
        if cookie_secret(request.scope) is not None:
            clear_session_cookie(response, secure=secure(request))
        return response

    app.add_exception_handler(SignInNeeded, sign_in_needed)

    # ---- sign-in, sign-out -------------------------------------------------------------------

    @router.get("/sign-in")
    async def sign_in_form(request: Request, next: str | None = None) -> HTMLResponse:
        return render(request, "sign_in.html", next=_safe_next(next), error=None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        if cross_site(request.scope):
            return render(request, "sign_in.html", 403, next="/", error="Sign in from this site's own form.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return render(request, "sign_in.html", 413, next="/", error="The form is too large.")
        try:
            fields = parse_qs(body.decode("utf-8", errors="strict"), max_num_fields=4, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            return render(request, "sign_in.html", 400, next="/", error="The form could not be read.")
        key_text = (fields.get("key") or [""])[0].strip()
        target = _safe_next((fields.get("next") or ["/"])[0])
        if not key_text:
            return render(request, "sign_in.html", 400, next=target, error="Enter an API key.")
        state = platform(request)
        client = request.client.host if request.client else ""
        try:
            if key_text.startswith(sessions.SESSION_PREFIX):
                raise Unauthorized("Sign in with an API key (`sophia keys create`), not a session.")
            key = await state.keys.admit(key_text, client)
        except Unauthorized as refused:
            return render(request, "sign_in.html", 401, next=target, error=refused.detail)
        except TooManyRequests as refused:
            response = render(request, "sign_in.html", 429, next=target, error=refused.detail)
            response.headers["retry-after"] = str(refused.retry_after_s)
            return response
        ttl_s = state.settings.web_session_ttl_s
        async with state.database.connection() as connection:
            secret = await sessions.create(connection, key, ttl_s)
        signed = RedirectResponse(target, status_code=303)
        set_session_cookie(signed, secret, ttl_s, secure=secure(request))
        return signed

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        response = RedirectResponse("/sign-in", status_code=303)
        secret = cookie_secret(request.scope)
        if secret is not None and not cross_site(request.scope):
            state = platform(request)
            if sessions.SESSION_SHAPE.fullmatch(secret):
                async with state.database.connection() as connection:
                    await sessions.end(connection, secret)
            state.keys.forget(secret)
            clear_session_cookie(response, secure=secure(request))
        return response

    # ---- the business view -------------------------------------------------------------------

    async def business_figures(state: Platform, where: analytics.Filters) -> dict[str, Any]:
        trend = analytics.TrendFilters(where.since, where.until, where.source_system)
        async with state.database.connection() as connection:
            figures: dict[str, Any] = {
                "as_of": await analytics.as_of(connection),
                "pipeline": await analytics.pipeline(connection, where),
                "funnel": await analytics.funnel(connection, where),
                "win_rate": await analytics.win_rate(connection, where),
                "velocity": await analytics.velocity(connection, where),
                "cohorts": await analytics.cohorts(connection, where),
                "sentiment": await analytics.sentiment(connection, trend),
                "topics": await analytics.topics(connection, trend),
            }
        figures["sentiment"] = figures["sentiment"][-TRENDS_WEEKS:]
        figures["topics"] = figures["topics"][-TRENDS_WEEKS:]
        most = max((stage["amount"] or 0 for stage in figures["pipeline"]), default=0)
        figures["pipeline_max"] = most or 1
        figures["funnel_max"] = max((stage["reached"] for stage in figures["funnel"]), default=0) or 1
        return figures

    async def deals_table(
        state: Platform, where: analytics.Filters, sort: str, order: str, page: int
    ) -> dict[str, Any]:
        async with state.database.connection() as connection:
            rows = await views.active_deals_table(
                connection,
                sort,
                order == "desc",
                page * DEALS_PAGE_SIZE,
                DEALS_PAGE_SIZE + 1,
                source_system=where.source_system,
                owner=where.owner,
                pipeline=where.pipeline,
            )
        filters = {"source_system": where.source_system, "owner": where.owner, "pipeline": where.pipeline}
        return {
            "deals_filters": urlencode({name: value for name, value in filters.items() if value}),
            "deals": rows[:DEALS_PAGE_SIZE],
            "has_next": len(rows) > DEALS_PAGE_SIZE and page + 1 < MAX_DEALS_PAGE,
            "sort": sort,
            "order": order,
            "page": page,
        }

    @router.get("/")
    async def business(
        request: Request, where: Where, sort: Sort = "amount", order: Order = "desc", page: Page = 0
    ) -> HTMLResponse:
        key = await signed_in(request)
        state = platform(request)
        return render(
            request,
            "business.html",
            key=key,
            where=where,
            filters_query=request.url.query,
            **await business_figures(state, where),
            **await deals_table(state, where, sort, order, page),
        )

    @router.get("/ui/analytics")
    async def analytics_fragment(request: Request, where: Where) -> HTMLResponse:
        await signed_in(request)
        figures = await business_figures(platform(request), where)
        return render(request, "analytics_panel.html", **figures)

    @router.get("/ui/deals")
    async def deals_fragment(
        request: Request, where: DealsWhere, sort: Sort = "amount", order: Order = "desc", page: Page = 0
    ) -> HTMLResponse:
        await signed_in(request)
        table = await deals_table(platform(request), where, sort, order, page)
        return render(request, "deals_table.html", **table)

    @router.get("/ui/search")
    async def search_fragment(
        request: Request,
        q: Annotated[str, Query(max_length=1000)] = "",
        k: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> HTMLResponse:
        await signed_in(request)
        query = q.strip()
        if not query:
            return render(request, "search_results.html", query="", mode=None, hits=[])
        mode, hits = await search(platform(request), query, k)
        return render(request, "search_results.html", query=query, mode=mode, hits=hits)

    # ---- a record ----------------------------------------------------------------------------

    @router.get("/records/{record_id}")
    async def record_page(request: Request, record_id: UUID) -> HTMLResponse:
        key = await signed_in(request)
        state = platform(request)
        async with state.database.connection() as connection:
            try:
                stored = await catalog.get(connection, record_id)
            except NotFound as missing:
                raise _as_page(request, missing) from None
            record = orjson.loads(stored.json)
            target = f"{record['source_system']}/{record['kind']}/{record['external_id']}"
            predictions = await enrichment.predictions_of(connection, record_id)
            history = await audit.entries_for(connection, target)
            stages = (
                await analytics.stage_history_of(connection, record_id) if record["kind"] == "deal" else []
            )
        return render(
            request,
            "record.html",
            key=key,
            record=record,
            data_json=orjson.dumps(record["data"], option=orjson.OPT_INDENT_2).decode(),
            predictions=predictions,
            history=history,
            stages=stages,
        )

    # ---- the ops view ------------------------------------------------------------------------

    def ops_view(request: Request) -> OpsView:
        state = platform(request)
        view = ops_views.get(id(state))
        if view is None:  # one per app state: its samples are what rates are computed from
            ops_views.clear()
            view = ops_views[id(state)] = OpsView(state.settings, state.database)
        return view

    @router.get("/ops")
    async def ops_page(request: Request) -> HTMLResponse:
        key = await signed_in(request, "admin")
        return render(request, "ops.html", key=key, ops=await ops_view(request).snapshot())

    @router.get("/ui/ops")
    async def ops_fragment(request: Request) -> HTMLResponse:
        await signed_in(request, "admin")
        return render(request, "ops_panel.html", ops=await ops_view(request).snapshot())

    async def page_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ShownAsPage)
        return render(request, "error.html", error.status, title=error.title, detail=error.detail)

    app.add_exception_handler(ShownAsPage, page_error)
    app.include_router(router)
