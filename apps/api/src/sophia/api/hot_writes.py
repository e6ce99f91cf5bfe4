"""The front door for writes: `PUT /api/v1/records/{source_system}/{kind}/{external_id}` answered
before FastAPI when nothing about it needs FastAPI.

A PUT costs the API's Python three times what the service call inside it costs: FastAPI's routing,
its solving of the route's seven parameters and dependency, and the middleware stack around them
(docs/loadtest.md, "A write before FastAPI"). `answer_put` takes the request the route would take
when every part of it is plainly valid: a bearer key this process verified recently with the
`write` scope, a canonical path, a JSON body of the length it declared (read whole, in as many
pieces as it came) that `RecordWrite` accepts, at most one of `If-Match` and `If-None-Match`,
each well formed. Such a request is parsed as FastAPI parses it (`json.loads` of the body, then
`RecordWrite`), written through the same service call, and answered with the bytes and headers
the route gives, its request id and its latency metric included; a failure of the write itself (a
412, an engine down) as the application answers it.

Anything else goes on to the application with the body it sent, replayed, so that every refusal
(a 401, a 403, a 415, a 422 naming the field, a 413) is the application's, in its words: this door
never refuses a request, it only answers the ones the route would have answered with a write.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import structlog
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from sophia.api.auth import bearer_secret
from sophia.api.hot import answer_problem, front_door_headers
from sophia.api.http_cache import JSON
from sophia.api.middleware import REQUEST_ID, STARTED_KEY, latency, log_request, new_request_id
from sophia.api.problems import BodyTimedOut, stalled_detail
from sophia.api.records import service
from sophia.api.records.endpoints import check_key_segments, parse_conditions, write_headers
from sophia.api.records.schemas import RecordWrite
from sophia.api.state import AppState
from sophia.core.errors import SophiaError
from sophia.core.records import EXTERNAL_ID_MAX_LENGTH, EXTERNAL_ID_PATTERN, IDENTIFIER_PATTERN, RecordKey
from sophia.database.verifier import SCOPE_RANK

RECORDS_PREFIX = "/api/v1/records/"
PUT_TEMPLATE = RECORDS_PREFIX + "{source_system}/{kind}/{external_id}"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)
WRITE_RANK = SCOPE_RANK["write"]
DIRECT_WRITES = Counter(
    "sophia_api_direct_writes_total", "Record PUTs answered before routing (the others took the long way)"
)


def record_key_of(path: str) -> RecordKey | None:
    """The record a PUT's path names when the route would take each part as it is; else None."""
    if not path.startswith(RECORDS_PREFIX):
        return None
    parts = path[len(RECORDS_PREFIX) :].split("/", 2)  # an external id may hold `/`, as on the route
    if len(parts) != 3:
        return None
    source_system, kind, external_id = parts
    if not (_IDENTIFIER.fullmatch(source_system) and _IDENTIFIER.fullmatch(kind)):
        return None
    if not (0 < len(external_id) <= EXTERNAL_ID_MAX_LENGTH and _EXTERNAL_ID.fullmatch(external_id)):
        return None
    return RecordKey(source_system, kind, external_id)


async def answer_put(state: AppState | None, scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """None when the PUT was answered here; else the `receive` to hand the application (the
    original, or one that replays the body this read first)."""
    started = time.perf_counter()
    if state is None or state.settings.access_log or scope.get("root_path") or scope.get("query_string"):
        return receive
    key = record_key_of(scope["path"])
    if key is None:
        return receive
    try:
        check_key_segments(scope.get("raw_path"), key.source_system, key.kind)
    except SophiaError:
        return receive  # the route says what is wrong
    headers = front_door_headers(scope)
    if headers.repeated or headers.other_body_header or headers.authorization is None:
        return receive
    if headers.content_type is None or headers.content_type.lower() != b"application/json":
        return receive
    if headers.content_length is None or not headers.content_length.isdigit():
        return receive
    length = int(headers.content_length)
    if not 0 < length <= state.settings.max_body_bytes:
        return receive
    request_id = headers.request_id.decode("latin-1") if headers.request_id is not None else new_request_id()
    if headers.request_id is not None and not REQUEST_ID.fullmatch(request_id):
        return receive
    try:
        secret = bearer_secret(headers.authorization.decode("latin-1"))
        if_match, create_only = parse_conditions(_text(headers.if_match), _text(headers.if_none_match))
    except SophiaError:
        return receive
    caller = state.keys.remembered(secret)
    if caller is None or SCOPE_RANK[caller.scope] < WRITE_RANK:
        return receive

    received: list[Message] = []
    replay = _replaying(received, receive)
    scope[STARTED_KEY] = started  # handed on from here, its latency counts the upload read here
    body = b""
    idle_s = state.settings.body_idle_timeout_s
    while True:  # a body already sent is read whole; one that stalls is a 408, as on the route
        try:
            async with asyncio.timeout(idle_s):
                message = await receive()
        except TimeoutError:
            await answer_problem(scope, receive, send, BodyTimedOut(stalled_detail(idle_s)), request_id)
            return None
        received.append(message)
        if message["type"] != "http.request":
            return replay
        body += message.get("body", b"")
        if len(body) > length:
            return replay
        if not message.get("more_body"):
            break
    if len(body) != length:
        return replay
    try:
        write = RecordWrite.model_validate(json.loads(body))  # as FastAPI reads a JSON body
    except (ValueError, RecursionError, ValidationError):  # the route answers these, in its words
        return replay

    status = 500  # unless an answer starts
    try:
        status = await _write(
            state, scope, replay, send, key, write, caller.actor, request_id, if_match, create_only
        )
    finally:
        DIRECT_WRITES.inc()
        elapsed = time.perf_counter() - started
        latency("PUT", PUT_TEMPLATE, status).observe(elapsed)
        if status >= 500 or elapsed >= state.settings.slow_request_s:
            log_request("PUT", scope["path"], PUT_TEMPLATE, status, elapsed, request_id)
    return None


async def _write(
    state: AppState,
    scope: Scope,
    receive: Receive,
    send: Send,
    key: RecordKey,
    write: RecordWrite,
    actor: str,
    request_id: str,
    if_match: int | None,
    create_only: bool,
) -> int:
    """The write, answered as the route answers it; the answer's status."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        stored = await service.put_record(
            state.database,
            state.cache,
            key,
            write.data,
            write.created_at,
            if_match=if_match,
            create_only=create_only,
            actor=actor,
        )
    except Exception as error:  # a SophiaError's problem, or the application's logged 500
        return await answer_problem(scope, receive, send, error, request_id)
    finally:
        structlog.contextvars.clear_contextvars()
    status = 201 if stored.created else 200
    content = stored.json.encode()
    answer = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in write_headers(stored).items()
    ]
    answer += [  # in the order Starlette's `Response` and `RequestContext` add them
        (b"content-length", str(len(content)).encode()),
        (b"content-type", JSON.encode()),
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": answer})
    await send({"type": "http.response.body", "body": content})
    return status


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives the messages in `received` (read before the application was called)
    again, in order, then whatever `receive` gives."""
    given = 0

    async def receive_again() -> Message:
        nonlocal given
        if given < len(received):
            given += 1
            return received[given - 1]
        return await receive()

    return receive_again
