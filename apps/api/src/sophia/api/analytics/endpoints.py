"""HTTP for the sales analytics. Each answer reads the summary tables (never the catalog), goes
through the tiered cache under `ANALYTICS_TAG` (dropped when the consumer moves a summary), and says
how fresh it is (`as_of`: the time of the newest change the summaries hold; null before the first)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from sophia.api.dependencies import Reader
from sophia.api.http_cache import cached_response
from sophia.api.records.schemas import PlainText
from sophia.api.state import AppState
from sophia.cache.catalog import ANALYTICS_TAG
from sophia.core.records import IDENTIFIER_PATTERN
from sophia.database import analytics
from sophia.database.pool import Connection

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])
Query_ = Callable[[Connection, Any], Awaitable[Any]]


def filters(
    since: Annotated[
        date | None, Query(alias="from", description="First month counted (its day is ignored).")
    ] = None,
    until: Annotated[date | None, Query(alias="to", description="Last month counted (included).")] = None,
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, max_length=64)] = None,
    owner: Annotated[PlainText | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[PlainText | None, Query(min_length=1, max_length=200)] = None,
) -> analytics.Filters:
    analytics.check_range(since, until)
    return analytics.Filters(since, until, source_system, owner, pipeline)


Filters = Annotated[analytics.Filters, Depends(filters)]


def trend_filters(
    since: Annotated[
        date | None, Query(alias="from", description="First week counted (its Monday on).")
    ] = None,
    until: Annotated[date | None, Query(alias="to", description="Last week counted (included).")] = None,
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, max_length=64)] = None,
    kind: Annotated[Literal["call", "message"] | None, Query(description="Calls or messages alone.")] = None,
) -> analytics.TrendFilters:
    analytics.check_range(since, until)
    return analytics.TrendFilters(since, until, source_system, kind)


TrendFilters = Annotated[analytics.TrendFilters, Depends(trend_filters)]


def _number(value: object) -> float:
    """Sums are exact numerics in PostgreSQL; JSON gets them as numbers."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


async def answer(request: Request, state: AppState, name: str, where: Any, query: Query_) -> Response:
    """`{"as_of": ..., "<name>": ...}` for these filters, from the cache or the summaries."""

    async def load() -> bytes:
        async with state.database.connection() as connection:
            fresh = await analytics.as_of(connection)
            result = await query(connection, where)
        return orjson.dumps({"as_of": fresh, name: result}, default=_number)

    key = f"analytics:{request.url.path}:" + orjson.dumps(where).decode()
    cached = await state.cache.get_or_load(key, load, "api", tags=(ANALYTICS_TAG,))
    return cached_response(request, cached, state.cache_control)


@router.get("/pipeline", summary="Open deals by stage: count, amount and probability-weighted amount")
async def pipeline(request: Request, caller: Reader, where: Filters) -> Response:
    return await answer(request, caller.state, "stages", where, analytics.pipeline)


@router.get("/win-rate", summary="Won / (won + lost) by closing month, in all, by owner and by month")
async def win_rate(request: Request, caller: Reader, where: Filters) -> Response:
    return await answer(request, caller.state, "win_rate", where, analytics.win_rate)


@router.get("/velocity", summary="Sales velocity: open deals x average size x win rate / cycle days")
async def velocity(request: Request, caller: Reader, where: Filters) -> Response:
    return await answer(request, caller.state, "velocity", where, analytics.velocity)


@router.get("/cohorts", summary="Deals by created month: how many are won, lost and still open")
async def cohorts(request: Request, caller: Reader, where: Filters) -> Response:
    return await answer(request, caller.state, "cohorts", where, analytics.cohorts)


@router.get("/funnel", summary="Deals reaching each stage, conversion from the previous, days in stage")
async def funnel(request: Request, caller: Reader, where: Filters) -> Response:
    return await answer(request, caller.state, "stages", where, analytics.funnel)


@router.get("/sentiment", summary="Calls and messages per week by the sentiment the model gave them")
async def sentiment(request: Request, caller: Reader, where: TrendFilters) -> Response:
    return await answer(request, caller.state, "weeks", where, analytics.sentiment)


@router.get("/topics", summary="Calls and messages per week by topic label")
async def topics(request: Request, caller: Reader, where: TrendFilters) -> Response:
    return await answer(request, caller.state, "weeks", where, analytics.topics)


@router.get("/companies", summary="Activity per company: calls, messages, open deals and the last touch")
async def companies(
    request: Request,
    caller: Reader,
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, max_length=64)] = None,
    company: Annotated[
        PlainText | None, Query(min_length=1, max_length=200, description="One company's id.")
    ] = None,
    order: Annotated[
        Literal["last_touch", "calls", "messages", "open_deals"], Query(description="Most first.")
    ] = "last_touch",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    where = analytics.CompanyFilters(source_system, company, order, limit)
    return await answer(request, caller.state, "companies", where, analytics.companies)
