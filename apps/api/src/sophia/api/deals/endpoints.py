"""HTTP for the deals views: `active_deals_mv` and its refresh."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from sophia.api.dependencies import Admin, Reader
from sophia.api.http_cache import cached_response
from sophia.api.pages import json_page, page_size
from sophia.cache.catalog import ACTIVE_DEALS_TAG, active_deals_key
from sophia.core.cursor import decode_cursor, filter_fingerprint, split_page
from sophia.database import views

router = APIRouter(prefix="/api/v1", tags=["deals"])
_FINGERPRINT = filter_fingerprint("active_deals")


@router.get("/deals/active", summary="Open deals (from the active_deals_mv view), in pages")
async def active_deals(
    request: Request,
    caller: Reader,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    size = page_size(caller.state.settings, limit)
    after = decode_cursor(cursor, _FINGERPRINT) if cursor else None

    async def load() -> bytes:
        async with caller.state.database.connection() as connection:
            rows = await views.active_deals_page(connection, after, size + 1)
        page, next_cursor = split_page(rows, size, lambda row: row[0], _FINGERPRINT)
        return json_page((json for _, json in page), next_cursor)

    key = active_deals_key(cursor, size)
    cached = await caller.state.cache.get_or_load(key, load, "api", tags=(ACTIVE_DEALS_TAG,))
    return cached_response(request, cached, caller.state.cache_control)


@router.post(
    "/admin/views/active-deals:refresh",
    status_code=204,
    summary="Check active_deals_mv against the catalog and mend what differs (readers are not blocked)",
)
async def refresh_active_deals(caller: Admin) -> Response:
    async with caller.state.database.connection() as connection:
        actor = f"key/{caller.key.prefix}"
        await views.refresh_active_deals(connection, caller.state.settings.db_maintenance_timeout_s, actor)
    await caller.state.cache.invalidate(tags=[ACTIVE_DEALS_TAG])
    return Response(status_code=204)
