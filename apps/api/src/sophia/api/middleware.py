"""Pure-ASGI middleware: request id, access log, metrics per route template, body size limits."""

from __future__ import annotations

import asyncio
import random
import re
import time

import structlog
from prometheus_client.metrics import Histogram
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sophia.api.problems import (
    BodyEncoded,
    BodyStalled,
    BodyTooLarge,
    log_kind,
    problem,
    route_template,
    too_large,
)
from sophia.shared.logging import CLIENT_LINES, get_logger
from sophia.shared.metrics import HTTP_LATENCY
from sophia.shared.settings import Settings

log = get_logger("sophia.api.access")

BULK_PATHS = frozenset({"/api/v1/records:bulk"})
EVENTS_PATH = "/api/v1/events"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""A client's X-Request-ID becomes the trace id of every event the request writes: bounded, and
written with characters that need no escaping anywhere it goes (logs, headers, JSON)."""
IDENTITY = frozenset({"identity", ""})
"""The only Content-Encoding a request body may have: the API does not decompress request bodies."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Anything else is labelled OTHER, so clients cannot grow the metrics' label sets."""
STARTED_KEY = "sophia.started"
"""When a front door that read the body before handing the request on began (`perf_counter`): the
request's latency counts from there, its upload included."""


_LATENCY_CHILDREN: dict[tuple[str, str, int], Histogram] = {}


def latency(method: str, route: str, status: int) -> Histogram:
    """The request latency histogram's child for these labels, kept (labels() locks and hashes on
    every call)."""
    key = (method, route, status)
    child = _LATENCY_CHILDREN.get(key)
    if child is None:
        child = _LATENCY_CHILDREN[key] = HTTP_LATENCY.labels(method, route, str(status))
    return child


def new_request_id() -> str:
    """32 random hex characters. A correlation id, not a secret, so not from `os.urandom`: its
    `getrandom()` call lets go of the interpreter's lock, and under load the event loop then waits
    for another thread (the server's, the model's) to hand it back: the hostile benchmark caught
    this line in the loop's stalls. `random` is reseeded in every forked worker (CPython does so at
    fork), so two workers do not repeat each other's ids."""
    return f"{random.getrandbits(128):032x}"


class RequestContext:
    """Wraps the app: binds a request id, limits the body, logs and measures each request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.max_bulk_bytes = settings.max_bulk_bytes
        self.max_events_bytes = settings.events_max_body_bytes
        self.access_log = settings.access_log
        self.slow_request_s = settings.slow_request_s
        self.body_idle_s = settings.body_idle_timeout_s

    def _limit_for(self, path: str) -> int:
        if path in BULK_PATHS:
            return self.max_bulk_bytes
        return self.max_events_bytes if path == EVENTS_PATH else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = scope.get(STARTED_KEY) or time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given is not None and REQUEST_ID.fullmatch(given) else new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        limit = self._limit_for(scope["path"])
        status = 500
        seen = 0
        body_read = False

        async def limited_receive() -> Message:
            nonlocal seen, body_read
            if body_read:  # what comes after the body (a disconnect) may take as long as it takes
                return await receive()
            try:  # a body that stops arriving is a 408 on every route, not a coroutine held for good
                async with asyncio.timeout(self.body_idle_s):
                    message = await receive()
            except TimeoutError:
                raise BodyStalled(self.body_idle_s) from None
            body_read = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if size and not seen:  # the body's first bytes: only requests that send one pay this
                    _refuse_encoded(scope)
                seen += size
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if given is not None and request_id != given:
                await _bad_request_id(scope["path"], given)(scope, receive, send_with_id)  # reads no body
                return
            declared = _header(scope, b"content-length")
            # ASCII digits only: str.isdigit() also takes '²', which int() does not
            if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
                await too_large(scope["path"], limit)(scope, receive, send_with_id)  # reads no body
                return
            await self.app(scope, limited_receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            latency(method, template, status).observe(elapsed)
            if self.access_log or status >= 500 or elapsed >= self.slow_request_s:
                log_request(
                    method,
                    scope["path"],
                    template,
                    status,
                    elapsed,
                    every=self.access_log,
                    kind=log_kind(scope),
                )
            structlog.contextvars.clear_contextvars()


def log_request(
    method: str,
    path: str,
    route: str,
    status: int,
    elapsed: float,
    request_id: str | None = None,
    *,
    every: bool = False,
    kind: str | None = None,
) -> None:
    """The access log's line for one request (every one with the access log on: `every`; else the
    slow ones and the 5xx, which a client can cause at will, so at most `CLIENT_LINES`' rate of each
    status and `kind`: `problems.log_kind`, the route or what answered before routing; `route` when
    not given). `request_id` where it is not bound to the log's context (the front doors)."""
    fields: dict[str, object] = {} if request_id is None else {"request_id": request_id}
    if not every:
        suppressed = CLIENT_LINES.admit((kind or route, status))
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
    log.info(
        "request",
        method=method,
        path=path,
        route=route,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        **fields,
    )


def _bad_request_id(instance: str, given: str) -> Response:
    detail = (
        f"X-Request-ID must be 1 to 128 characters of A-Z, a-z, 0-9 and . _ : / + = - "
        f"(got {len(given)} characters)."
    )
    return problem(400, "Bad request", detail, instance)


def _refuse_encoded(scope: Scope) -> None:
    """A body sent compressed (any Content-Encoding but identity) is refused, not read as it is."""
    encoding = _header(scope, b"content-encoding")
    if encoding is not None and any(part.strip().lower() not in IDENTITY for part in encoding.split(",")):
        raise BodyEncoded(encoding.strip())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
