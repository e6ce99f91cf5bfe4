"""HTTP caching of cached reads (L3): ETag, If-None-Match → 304, Cache-Control, a stale Warning."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sophia.cache import CacheResult

JSON = "application/json"
STALE_WARNING = '110 - "Response is Stale"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our ETag."""
    if not if_none_match:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def cached_response(request: Request, cached: CacheResult, cache_control: str) -> Response:
    """The cached bytes as they are, or 304 when the client holds them already."""
    etag = f'"{cached.etag}"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if cached.stale:
        headers["Warning"] = STALE_WARNING
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(cached.value, media_type=JSON, headers=headers)
