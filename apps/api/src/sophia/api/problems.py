"""The one place errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sophia.core.documents import describe, document_problem
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
from sophia.shared.logging import get_logger

log = get_logger(__name__)

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


class BodyTimedOut(SophiaError):
    """The client stopped sending its body: 408, and nothing of it is kept."""

    title = "Request timeout"


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
        log.warning("unavailable", path=request.url.path, detail=error.detail)
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
    errors = [FieldError(_location(item["loc"]), item["msg"]) for item in raw]
    if any(item.get("type") == "json_invalid" for item in raw):
        return problem(400, "Malformed JSON", "The request body is not valid JSON.", request.url.path, errors)
    return problem(422, "Invalid input", "The request does not match the schema.", request.url.path, errors)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if isinstance(error, BodyTooLarge):
        return too_large(request.url.path, error.max_bytes)
    return problem(
        error.status_code,
        str(error.detail) if error.status_code != 404 else "Not found",
        f"{request.method} {request.url.path}: {error.detail}",
        request.url.path,
        headers=dict(error.headers or {}),
    )


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
