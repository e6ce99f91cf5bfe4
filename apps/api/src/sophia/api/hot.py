"""The hot read: a record cached in this process, sent before FastAPI is involved at all.

Pure ASGI, innermost of Sophia's middleware. A GET of `/api/v1/records/{id}` whose key `KeyGate`
verified (from memory, if this process verified it less than `SOPHIA_API_KEY_CACHE_TTL_S` ago) and
whose record is fresh in L1 is answered here: a dict lookup, a clock read and two ASGI messages; no
routing, no dependency solving, no pydantic, no database, no Redis. Anything else (a miss, a stale
entry, a cached 404, another route) goes on to the application, which answers it the long way and
fills L1 for next time. The answer is byte for byte the one the application gives, headers
included (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia.api.auth import SCOPE_KEY
from sophia.api.http_cache import JSON, matches
from sophia.api.state import AppState
from sophia.cache.catalog import record_key

RECORD_PREFIX = "/api/v1/records/"
CANONICAL_ID_LENGTH = 36
"""`str(UUID)`: the only spelling of an id that L1 holds; other spellings go the long way."""


@dataclass(frozen=True, slots=True)
class _Route:
    """What the request-context middleware reads to label metrics with the route's template."""

    path: str


RECORD_ROUTE = _Route(RECORD_PREFIX + "{record_id}")
HOT_READS = Counter("sophia_api_hot_reads_total", "Reads answered from L1 before routing")


class HotReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and await self._answer(scope, send):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        path: str = scope["path"]
        if not path.startswith(RECORD_PREFIX) or len(path) != len(RECORD_PREFIX) + CANONICAL_ID_LENGTH:
            return False
        if SCOPE_KEY not in scope:
            return False  # not behind KeyGate (every key it lets through may read)
        state: AppState = scope["app"].state.sophia  # set by the lifespan, which servers run first
        if_none_match = next((value for name, value in scope["headers"] if name == b"if-none-match"), None)
        entry = state.cache.peek(record_key_of(path))
        if entry is None:
            return False
        HOT_READS.inc()
        scope["route"] = RECORD_ROUTE
        etag = f'"{entry.etag}"'.encode()
        headers = [(b"etag", etag), (b"cache-control", state.cache_control.encode())]
        if if_none_match is not None and matches(if_none_match.decode("latin-1"), etag.decode()):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        body = entry.value
        headers += [(b"content-length", str(len(body)).encode()), (b"content-type", JSON.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def record_key_of(path: str) -> str:
    """The cache key of the record a canonical path names: `record_key` of its id, unparsed."""
    return record_key(path[len(RECORD_PREFIX) :])
