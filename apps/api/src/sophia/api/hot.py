"""The hot read: `GET /api/v1/records/{id}` answered before FastAPI is involved at all.

`answer_hit` is the front door, called before FastAPI and every middleware (`SophiaApi`): a record
fresh in L1 for a bearer key this process verified recently is answered there, request id and
latency metric included; a third less of the API's CPU per cached read than below. `HotReads`
answers the rest of the reads by id it can:

Pure ASGI, innermost of Sophia's middleware. A GET of `/api/v1/records/{id}` (the id in its
canonical spelling) whose key `KeyGate` verified (from memory, if this process verified it less
than `SOPHIA_API_KEY_CACHE_TTL_S` ago) is answered here. A record fresh in L1 costs a dict
lookup, a clock read and two ASGI messages: no routing, no dependency solving, no pydantic, no
database, no Redis. Any other is loaded through the same service call the route makes (L2, then
PostgreSQL, filling L1), still without routing: the read most clients make, uncached, costs a
third less of the API's CPU so. Whatever is not a record to send (another route, another spelling
of the id, a 404, an engine down) goes on to the application, which answers it the long way, with
its problem+json. The answer is byte for byte the one the application gives, headers included
(tested).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import structlog
from prometheus_client import Counter
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sophia.api import problems
from sophia.api.auth import SCOPE_KEY, bearer_secret
from sophia.api.http_cache import JSON, STALE_WARNING, matches
from sophia.api.middleware import REQUEST_ID, latency, log_request, new_request_id
from sophia.api.records import service
from sophia.api.state import AppState
from sophia.cache.catalog import record_key
from sophia.core.errors import SophiaError

RECORD_PREFIX = "/api/v1/records/"
CANONICAL_ID_LENGTH = 36
"""`str(UUID)`: the only spelling of an id that L1 holds; other spellings go the long way."""
HOT_PATH_LENGTH = len(RECORD_PREFIX) + CANONICAL_ID_LENGTH
Found = tuple[bytes, str, bool]
"""A record to answer: its bytes, its ETag, and whether it is stale."""


@dataclass(frozen=True, slots=True)
class _Route:
    """What the request-context middleware reads to label metrics with the route's template."""

    path: str


RECORD_ROUTE = _Route(RECORD_PREFIX + "{record_id}")
CONTENT_TYPE = (b"content-type", JSON.encode())
STALE = (b"warning", STALE_WARNING.encode())
HOT_READS = Counter("sophia_api_hot_reads_total", "Reads answered from L1 before routing")
DIRECT_READS = Counter(
    "sophia_api_direct_reads_total", "Reads loaded (L2 or PostgreSQL) and answered before routing"
)


@dataclass(slots=True)
class FrontDoorHeaders:
    """The headers a front door reads, each as sent (the first when repeated, as the application
    reads them); `repeated` says one came twice, and a front door then leaves the request to the
    application rather than guess which one it means."""

    authorization: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None
    if_match: bytes | None = None
    if_none_match: bytes | None = None
    request_id: bytes | None = None
    other_body_header: bool = False
    """Content-Encoding or Transfer-Encoding: the application decides what they mean."""
    repeated: bool = False


_NAMES = {
    b"authorization": "authorization",
    b"content-type": "content_type",
    b"content-length": "content_length",
    b"if-match": "if_match",
    b"if-none-match": "if_none_match",
    b"x-request-id": "request_id",
}


def front_door_headers(scope: Scope) -> FrontDoorHeaders:
    found = FrontDoorHeaders()
    for name, value in scope["headers"]:
        field = _NAMES.get(name)
        if field is not None:
            if getattr(found, field) is not None:
                found.repeated = True
            else:
                setattr(found, field, value)
        elif name in (b"content-encoding", b"transfer-encoding"):
            found.other_body_header = True
    return found


class HotReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and await self._answer(scope, send):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        path: str = scope["path"]
        if not path.startswith(RECORD_PREFIX) or len(path) != HOT_PATH_LENGTH or scope.get("root_path"):
            return False  # under a root path, the router matches the path without it
        if scope.get("query_string"):
            return False  # the route takes no parameter: it refuses one, naming it
        if SCOPE_KEY not in scope:
            return False  # not behind KeyGate (every key it lets through may read)
        state: AppState = scope["app"].state.sophia  # set by the lifespan, which servers run first
        try:
            found = await _record(state, path)
        except SophiaError:
            return False  # a 404, an engine down...: the application answers, in its words
        if found is None:
            return False
        scope["route"] = RECORD_ROUTE
        if_none_match = next((header for name, header in scope["headers"] if name == b"if-none-match"), None)
        status, headers, body = _response(state, found, if_none_match)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


async def _record(state: AppState, path: str, request_id: str | None = None) -> Found | None:
    """`(value, etag, stale)` of the record a canonical path names: from L1 (a hot read), or loaded
    as the route loads it, L2 then PostgreSQL (a direct read; what it logs carries `request_id`
    where given). None for another spelling of the id (the route's to answer); the service's
    `SophiaError` for a record that is not there or an engine down."""
    entry = state.cache.peek(record_key_of(path))
    if entry is not None:
        HOT_READS.inc()
        return entry.value, entry.etag, False
    record_id = canonical_id(path)
    if record_id is None:
        return None
    if request_id is not None:
        structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        cached = await service.get_record(state.database, state.cache, record_id)
    finally:
        if request_id is not None:
            structlog.contextvars.clear_contextvars()
    DIRECT_READS.inc()
    return cached.value, cached.etag, cached.stale


def _response(
    state: AppState, found: Found, if_none_match: bytes | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the route's answer: 304 when the client holds this ETag."""
    value, etag, stale = found
    quoted = f'"{etag}"'.encode()
    headers = [(b"etag", quoted), (b"cache-control", state.cache_control.encode())]
    if stale:
        headers.append(STALE)
    if if_none_match is not None and matches(if_none_match.decode("latin-1"), quoted.decode()):
        return 304, headers, b""
    headers += [(b"content-length", str(len(value)).encode()), CONTENT_TYPE]
    return 200, headers, value


def canonical_id(path: str) -> UUID | None:
    """The id a path names if it is spelled as `str(UUID)` spells it; else None (the route's own
    validation answers other spellings and non-ids)."""
    text = path[len(RECORD_PREFIX) :]
    try:
        record_id = UUID(text)
    except ValueError:
        return None
    return record_id if str(record_id) == text else None


def record_key_of(path: str) -> str:
    """The cache key of the record a canonical path names: `record_key` of its id, unparsed."""
    return record_key(path[len(RECORD_PREFIX) :])


async def answer_hit(state: AppState | None, scope: Scope, receive: Receive, send: Send) -> bool:
    """The front door, before FastAPI and every middleware: a GET of a record by a bearer key this
    process verified less than `SOPHIA_API_KEY_CACHE_TTL_S` ago, answered with the bytes, headers
    and metrics the whole path gives it (its request id, its latency under the route's template):
    from L1 when it is fresh there, else loaded as the route loads it (L2, then PostgreSQL, with
    the request id bound to what that logs, and a slow one logged); a load that failed (a 404, an
    engine down) answered with the application's problem, not loaded again by the route. False
    for anything else, which goes the whole way (no key, a key to check, a bad request id, an
    access log to write, another spelling of the id, a header sent twice, a declared body, a
    server's root path, a query string)."""
    started = time.perf_counter()
    path: str = scope["path"]
    if state is None or len(path) != HOT_PATH_LENGTH or not path.startswith(RECORD_PREFIX):
        return False
    if scope.get("root_path") or scope.get("query_string") or state.settings.access_log:
        return False
    sent = front_door_headers(scope)
    # a body declared on a GET is the application's to refuse or ignore (413 past the limit)
    if sent.repeated or sent.other_body_header or sent.content_length is not None:
        return False
    authorization, if_none_match, given = sent.authorization, sent.if_none_match, sent.request_id
    if authorization is None:
        return False
    try:
        secret = bearer_secret(authorization.decode("latin-1"))
    except SophiaError:
        return False
    if state.keys.remembered(secret) is None:
        return False
    request_id = given.decode("latin-1") if given is not None else new_request_id()
    if given is not None and not REQUEST_ID.fullmatch(request_id):
        return False
    try:
        found = await _record(state, path, request_id)
    except SophiaError as error:  # answered here: the route would only load it a second time
        status = await answer_problem(scope, receive, send, error, request_id)
    else:
        if found is None:
            return False
        status, headers, body = _response(state, found, if_none_match)
        headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elapsed = time.perf_counter() - started
    latency("GET", RECORD_ROUTE.path, status).observe(elapsed)
    if status >= 500 or elapsed >= state.settings.slow_request_s:
        log_request("GET", path, RECORD_ROUTE.path, status, elapsed, request_id)
    return True


async def answer_problem(
    scope: Scope, receive: Receive, send: Send, error: Exception, request_id: str
) -> int:
    """A failure answered as the application answers it (a `SophiaError`'s problem+json,
    `Retry-After` and the warning it logs; anything else a logged 500, called where it is being
    handled), with the request id; its status."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    scope[problems.LOG_KIND_KEY] = f"front door {scope['method']}"
    try:
        request = StarletteRequest(scope)
        if isinstance(error, SophiaError):
            response = await problems.sophia_error(request, error)
        else:
            response = await problems.unexpected_error(request, error)
    finally:
        structlog.contextvars.clear_contextvars()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
        await send(message)

    await response(scope, receive, send_with_id)
    return response.status_code
