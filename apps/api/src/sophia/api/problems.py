"""The one place errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sophia.core.documents import MAX_DEPTH, Location, describe, document_problem
from sophia.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    SophiaError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from sophia.shared.logging import CLIENT_LINES, get_logger

log = get_logger(__name__)

LOG_KIND_KEY = "sophia.log_kind"
"""Scope key: what a request answered before routing counts as in `CLIENT_LINES` (the layers that
answer there set it: the key gate, the models' admission, the front doors), so that a flood
refused by one of them does not use up the lines another's failures are logged in."""


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The matched route's path as its docs write it: `{external_id}`, not `{external_id:rest}`
    (metrics and logs label requests by it)."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def log_kind(scope: Mapping[str, Any]) -> str:
    """The matched route's template, else what answered before routing, else `unmatched`."""
    return route_template(scope) or scope.get(LOG_KIND_KEY) or "unmatched"


PROBLEM_TYPE = "application/problem+json"
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that went away before the answer: what the access log and metrics say."""

STATUS_BY_ERROR: dict[type[SophiaError], int] = {
    Invalid: 422,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    Unauthorized: 401,
    Forbidden: 403,
    Unavailable: 503,
    TooManyRequests: 429,
}


class BadRequest(Invalid):
    """Input that cannot even be read (malformed JSON, unknown parameters): 400, not 422."""

    title = "Bad request"


class UnsupportedMediaType(Invalid):
    title = "Unsupported media type"


class BodyTooLarge(StarletteHTTPException):
    """Raised while a body streams in. An HTTPException, so FastAPI's body parsing lets it through
    (it turns any other exception raised there into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is over {max_bytes} bytes.")
        self.max_bytes = max_bytes


class BodyEncoded(StarletteHTTPException):
    """A body sent with a `Content-Encoding` (gzip, br...): the API does not decompress request
    bodies. Raised where the body is first read (`sophia.api.middleware`), an HTTPException for the
    same reason as `BodyTooLarge`."""

    def __init__(self, encoding: str) -> None:
        super().__init__(415, f"Content-Encoding {encoding} is not supported.")
        self.encoding = encoding


def unsupported_media_type(send: str, media_type: str) -> UnsupportedMediaType:
    """The 415 for a body of a type the route does not read: `send` says what it reads."""
    return UnsupportedMediaType(
        send, [FieldError(("header", "Content-Type"), f"got {media_type or 'nothing'}")]
    )


class BodyTimedOut(SophiaError):
    """The client stopped sending its body: 408, and nothing of it is kept."""

    title = "Request timeout"


def stalled_detail(idle_s: float) -> str:
    return f"No part of the body arrived for {idle_s:g} s. Nothing was written."


class BodyStalled(StarletteHTTPException):
    """No part of the body arrived for `SOPHIA_BODY_IDLE_TIMEOUT_S`, on any route: raised where the
    body is read (`sophia.api.middleware`), an HTTPException for the same reason as `BodyTooLarge`;
    answered as `BodyTimedOut` (408)."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(408, stalled_detail(idle_s))


STATUS_BY_ERROR[BadRequest] = 400
STATUS_BY_ERROR[BodyTimedOut] = 408
STATUS_BY_ERROR[UnsupportedMediaType] = 415


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    if errors:
        body["errors"] = [{"location": list(e.location), "message": e.message} for e in errors]
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _status_of(error: SophiaError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[kind]
    return 500


async def sophia_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, SophiaError)
    status = _status_of(error)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
        suppressed = CLIENT_LINES.admit(("unavailable", log_kind(request.scope)))
        if suppressed is not None:
            said = {"suppressed": suppressed} if suppressed else {}
            log.warning("unavailable", path=request.url.path, detail=error.detail, **said)
    elif isinstance(error, TooManyRequests):
        headers["Retry-After"] = str(error.retry_after_s)
    elif isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="sophia"'
    errors = error.errors if isinstance(error, Invalid) else None
    return problem(
        status, error.title, error.detail, request.url.path, errors, headers, **extra, **error.context
    )


def _location(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    return tuple(part if isinstance(part, int) else str(part) for part in loc)


async def validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    raw = error.errors()
    if any(item["loc"] == ("body",) and isinstance(item.get("input"), bytes) for item in raw):
        # FastAPI hands a JSON body's field the raw bytes when the Content-Type is not JSON.
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        send = "Send the body as JSON with Content-Type: application/json."
        return await sophia_error(request, unsupported_media_type(send, media_type))
    errors = [FieldError(_location(item["loc"]), item["msg"]) for item in raw]
    if any(item.get("type") == "json_invalid" for item in raw):
        return problem(400, "Malformed JSON", "The request body is not valid JSON.", request.url.path, errors)
    return problem(422, "Invalid input", "The request does not match the schema.", request.url.path, errors)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if isinstance(error, BodyTooLarge):
        return too_large(request.url.path, error.max_bytes)
    if isinstance(error, BodyStalled):
        return problem(408, BodyTimedOut.title, str(error.detail), request.url.path)
    if isinstance(error, BodyEncoded):
        detail = (
            "The API does not decompress request bodies: send the body uncompressed, "
            "without Content-Encoding (or with Content-Encoding: identity)."
        )
        errors = [FieldError(("header", "Content-Encoding"), f"got {error.encoding}")]
        return problem(415, UnsupportedMediaType.title, detail, request.url.path, errors)
    if error.status_code == 400 and isinstance(error.__cause__, ValueError | RecursionError):
        # FastAPI's "There was an error parsing the body": its JSON parser refused the body it read
        unreadable = await unreadable_body(request, error.__cause__)
        if unreadable is not None:
            return unreadable
    return problem(
        error.status_code,
        str(error.detail) if error.status_code != 404 else "Not found",
        f"{request.method} {request.url.path}: {error.detail}",
        request.url.path,
        headers=dict(error.headers or {}),
    )


class _LongInteger:
    """An integer too long for Python to read, found where `json` met it (`_integer`)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _integer(text: str) -> int | _LongInteger:
    digits = len(text.removeprefix("-"))
    limit = sys.get_int_max_str_digits()
    return _LongInteger(digits) if limit and digits > limit else int(text)


def _long_integer(raw: bytes) -> tuple[Location, _LongInteger] | None:
    """Where the first integer too long to read is in `raw`, which `json` refused for one."""
    try:
        pending: list[tuple[Any, Location]] = [(json.loads(raw, parse_int=_integer), ())]
    except (ValueError, RecursionError):
        return None
    while pending:
        item, where = pending.pop()
        if isinstance(item, _LongInteger):
            return where, item
        if isinstance(item, dict | list):
            children = list(item.items() if isinstance(item, dict) else enumerate(item))
            pending.extend((child, (*where, key)) for key, child in reversed(children))
    return None


_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _too_deep_at(text: str) -> int | None:
    """The character of `text` (JSON) where objects and arrays first nest deeper than `MAX_DEPTH`."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        mark = match.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return match.start()
        elif mark in "]}":
            depth -= 1
    return None


async def unreadable_body(request: Request, cause: BaseException) -> Response | None:
    """What FastAPI's generic 400 ("There was an error parsing the body") was about, said with
    where: text that is not UTF-8, an integer longer than Python reads, nesting deeper than its
    parser goes (the body, read by FastAPI, is searched for it). None for a cause not known here."""
    instance = request.url.path
    if isinstance(cause, UnicodeDecodeError):
        byte, at = cause.object[cause.start], cause.start
        message = f"not valid {cause.encoding.upper()}: byte 0x{byte:02x} at byte {at}"
        detail = f"The request body is {message}; JSON must be UTF-8 text."
        return problem(400, "Malformed JSON", detail, instance, [FieldError(("body", at), message)])
    if isinstance(cause, ValueError) and (found := _long_integer(await request.body())) is not None:
        where, number = ("body", *found[0]), found[1]
        message = f"an integer of {number.digits} digits: at most {sys.get_int_max_str_digits()} are read"
        detail = f"{describe(where)}: {message}."
        return problem(422, "Invalid input", detail, instance, [FieldError(where, message)])
    if isinstance(cause, RecursionError):
        deep = _too_deep_at((await request.body()).decode("utf-8", "replace"))
        where = ("body",) if deep is None else ("body", deep)
        message = f"nested deeper than {MAX_DEPTH} levels"
        after = "" if deep is None else f" (from character {deep})"
        detail = f"The request body's objects and arrays are {message}{after}."
        return problem(422, "Invalid input", detail, instance, [FieldError(where, message)])
    return None


def too_large(instance: str, max_bytes: int) -> Response:
    detail = f"The request body is over {max_bytes} bytes."
    return problem(413, "Payload too large", detail, instance, max_bytes=max_bytes)


async def client_disconnected(request: Request, error: Exception) -> Response:
    """The client hung up while its body streamed in: nothing of ours failed and nobody reads the answer."""
    log.info("client_disconnected", path=request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def unencodable_text(request: Request, error: Exception) -> Response:
    """A lone surrogate that Python's JSON parser let through, met by pydantic in a key: a 422
    naming where (the body, already read, is searched for it). An encoding error the body does not
    explain is ours: a logged 500, not the client's fault."""
    found = None
    with contextlib.suppress(ValueError):
        found = document_problem(json.loads(await request.body()))
    if found is None:
        return await unexpected_error(request, error)
    where, message = ("body", *found[0]), found[1]
    detail = f"{describe(where)}: {message}."
    return problem(422, "Invalid input", detail, request.url.path, [FieldError(where, message)])


async def unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return problem(500, "Internal error", "Something went wrong on our side.", request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(SophiaError, sophia_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(UnicodeEncodeError, unencodable_text)
    app.add_exception_handler(Exception, unexpected_error)
