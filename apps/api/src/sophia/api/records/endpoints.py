"""HTTP for records: parse headers and parameters, call the service, shape the response."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote_to_bytes
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.convertors import StringConvertor, register_url_convertor

from sophia.api.auth import authorize
from sophia.api.dependencies import Reader, Writer, check_query
from sophia.api.http_cache import JSON, cached_response
from sophia.api.pages import page_size
from sophia.api.problems import BadRequest, unsupported_media_type
from sophia.api.records import service
from sophia.api.records.schemas import BulkResult, Moment, RecordOut, RecordPage, RecordWrite
from sophia.api.state import AppState
from sophia.core.errors import FieldError, Invalid
from sophia.core.records import (
    EXTERNAL_ID_MAX_LENGTH,
    EXTERNAL_ID_PATTERN,
    IDENTIFIER_PATTERN,
    MAX_DATA_FILTERS,
    RecordFilter,
    RecordKey,
)
from sophia.database.catalog import StoredRecord

router = APIRouter(prefix="/api/v1", tags=["records"])


class RestOfPath(StringConvertor):
    """The rest of the path, whatever it holds: an external id may have `/` in it, and the stock
    `path` convertor (`.*`) would stop at a newline and let the route's `$` drop a final one."""

    regex = r"[\s\S]+"

    def to_string(self, value: str) -> str:
        return value  # `url_path_for` with an id holding `/` (the stock one refuses it)


register_url_convertor("rest", RestOfPath())
RECORD_KEY_SEGMENTS = [b"api", b"v1", b"records"]


def check_key_segments(raw_path: bytes | None, source_system: str, kind: str) -> None:
    """`Invalid` when an encoded `/` (`%2F`) in the source system or the kind moved the decoded
    path's boundaries: `hub%2Fspot/deal/x` would otherwise write source `hub`, kind `spot` and id
    `deal/x`. Judged from the path as sent (`raw_path`; nothing to judge without it, or when its
    segments do not spell `api/v1/records` as sent). Shared with the front door
    (`sophia.api.hot_writes`)."""
    if raw_path is None or b"%" not in raw_path:
        return  # nothing percent-encoded: the decoded path is the path as sent
    # a root path may come first; what lies past the kind is the id, decoded or not
    segments = [unquote_to_bytes(segment) for segment in raw_path.split(b"?", 1)[0].split(b"/", 8)]
    at = next(
        (i for i in range(len(segments) - 2) if segments[i : i + 3] == RECORD_KEY_SEGMENTS),
        None,
    )
    if at is None:
        return
    parts = segments[at + 3 : at + 5]
    if parts == [source_system.encode(), kind.encode()]:
        return
    field = "source_system" if not parts or parts[0] != source_system.encode() else "kind"
    raise Invalid(
        "The source system and the kind are path segments of their own: neither may hold an "
        "encoded `/` (only the external id, the rest of the path, may).",
        [FieldError(("path", field), "holds an encoded `/` (%2F)")],
    )


SourceSystem = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["hubspot"])]
Kind = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, examples=["deal"])]
ExternalId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=EXTERNAL_ID_MAX_LENGTH,
        pattern=EXTERNAL_ID_PATTERN,
        examples=["deal-1001"],
        description=(
            "The record's id in its source system: the rest of the path, any text but NUL, `/` "
            "included. Percent-encode it whole (`a/b` as `a%2Fb`): proxies and clients may merge "
            "`//` or resolve `..` in a path; a final `/` is part of the id."
        ),
    ),
]

LIST_PARAMETERS = {"source_system", "kind", "updated_since", "limit", "cursor"}
NDJSON_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-lines",
}
VERSION_TAG = re.compile(r"[0-9]{1,18}")


def _etag(version: int) -> str:
    return f'"{version}"'


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not VERSION_TAG.fullmatch(tag):
        raise BadRequest(
            'If-Match must be an ETag this API returned, such as "3".',
            [FieldError(("header", "If-Match"), "not a record version ETag")],
        )
    return int(tag)


def _parse_if_none_match(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != "*":
        raise BadRequest(
            "On writes, If-None-Match may only be `*` (create, never replace).",
            [FieldError(("header", "If-None-Match"), "only * is supported on PUT")],
        )
    return True


@router.put(
    "/records/{source_system}/{kind}/{external_id:rest}",
    response_model=RecordOut,
    status_code=200,
    responses={
        201: {"description": "Created"},
        412: {"description": "Version precondition failed"},
    },
    summary="Create or replace one record",
)
async def put_record(
    request: Request,
    source_system: SourceSystem,
    kind: Kind,
    external_id: ExternalId,
    body: RecordWrite,
    caller: Writer,
    if_match: Annotated[str | None, Header(description='Replace only at this version, e.g. "3".')] = None,
    if_none_match: Annotated[str | None, Header(description="`*`: create only, never replace.")] = None,
) -> Response:
    check_key_segments(request.scope.get("raw_path"), source_system, kind)
    if_match_version, create_only = parse_conditions(if_match, if_none_match)
    stored = await service.put_record(
        caller.state.database,
        caller.state.cache,
        RecordKey(source_system, kind, external_id),
        body.data,
        body.created_at,
        if_match=if_match_version,
        create_only=create_only,
        actor=caller.key.actor,
    )
    return Response(
        stored.json,
        status_code=201 if stored.created else 200,
        media_type=JSON,
        headers=write_headers(stored),
    )


def parse_conditions(if_match: str | None, if_none_match: str | None) -> tuple[int | None, bool]:
    """A PUT's preconditions: the version `If-Match` names, and whether `If-None-Match: *` asks to
    create only. Shared with the front door (`sophia.api.hot_writes`)."""
    if if_match is not None and if_none_match is not None:
        raise BadRequest(
            "Send If-Match (replace a version) or If-None-Match: * (create only), not both.",
            [FieldError(("header", "If-None-Match"), "conflicts with If-Match")],
        )
    return _parse_if_match(if_match), _parse_if_none_match(if_none_match)


def write_headers(stored: StoredRecord) -> dict[str, str]:
    """A written record's `ETag`, and its `Location` when the write created it."""
    headers = {"ETag": _etag(stored.version)}
    if stored.created:
        headers["Location"] = f"/api/v1/records/{stored.id}"
    return headers


@router.delete(
    "/records/{source_system}/{kind}/{external_id:rest}",
    status_code=204,
    responses={
        404: {"description": "No such record"},
        412: {"description": "Version precondition failed"},
    },
    summary="Soft-delete one record",
)
async def delete_record(
    request: Request,
    source_system: SourceSystem,
    kind: Kind,
    external_id: ExternalId,
    caller: Writer,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    check_key_segments(request.scope.get("raw_path"), source_system, kind)
    record = RecordKey(source_system, kind, external_id)
    version = await service.delete_record(
        caller.state.database, caller.state.cache, record, _parse_if_match(if_match), actor=caller.key.actor
    )
    return Response(status_code=204, headers={"ETag": _etag(version)})


@router.post(
    "/records:bulk",
    response_model=BulkResult,
    summary="Bulk upsert from streamed NDJSON: all lines or none",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {
                    "schema": {"type": "string"},
                    "example": (
                        '{"source_system":"hubspot","kind":"deal","external_id":"d-1",'
                        '"data":{"amount":"500"}}\n'
                    ),
                }
            },
        }
    },
)
async def bulk_ingest(request: Request, caller: Writer) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in NDJSON_TYPES:
        raise unsupported_media_type(
            "Send NDJSON (one record per line) with Content-Type: application/x-ndjson.", media_type
        )
    settings = caller.state.settings
    result = await service.bulk_ingest(
        caller.state.database,
        caller.state.cache,
        request.stream(),
        settings.max_line_bytes,
        settings.cache_invalidate_max_keys,
        spools=caller.state.spools,
        actor=caller.key.actor,
    )
    body = {"received": result.received, "created": result.created, "updated": result.updated}
    return Response(orjson.dumps(body), media_type=JSON)


@router.get(
    "/records/{record_id}",
    response_model=RecordOut,
    summary="One record by id",
)
async def get_record(record_id: UUID, request: Request) -> Response:
    state: AppState = request.app.state.sophia
    check_query(request)  # it takes none: a parameter here is a 400 naming it, as on every route
    await authorize(request, "read")
    cached = await service.get_record(state.database, state.cache, record_id)
    return cached_response(request, cached, state.cache_control)


@router.get(
    "/records",
    response_model=RecordPage,
    summary="Records, filtered, in pages",
    description=(
        "Filter by `source_system`, `kind`, `updated_since` and by equality on top-level `data` "
        "keys as `data.<key>=<value>` (the value as a string, or the number or boolean it spells), "
        "answered from an index. Pages follow `next_cursor`; a query past `SOPHIA_DB_LIST_TIMEOUT_S` "
        "is cancelled and answered 503."
    ),
)
async def list_records(
    request: Request,
    caller: Reader,
    source_system: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN)] = None,
    kind: Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN)] = None,
    updated_since: Moment = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    where = RecordFilter(source_system, kind, updated_since, _data_filters(request))
    size = page_size(caller.state.settings, limit)
    cached = await service.list_records(
        caller.state.database,
        caller.state.cache,
        where,
        cursor,
        size,
        timeout_s=caller.state.settings.db_list_timeout_s,
    )
    return cached_response(request, cached, caller.state.cache_control)


def _data_filters(request: Request) -> tuple[tuple[str, str], ...]:
    filters = []
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise BadRequest(
                "Query parameters may not contain NUL characters.",
                [FieldError(("query", name.replace("\x00", "")), "contains a NUL character")],
            )
        if name.startswith("data.") and 0 < len(name) - 5 <= 64:
            filters.append((name[5:], value))
            if len(filters) > MAX_DATA_FILTERS:
                raise BadRequest(
                    f"At most {MAX_DATA_FILTERS} data.<key>=<value> filters a list.",
                    [FieldError(("query", name), f"more than {MAX_DATA_FILTERS} data filters")],
                )
        elif name not in LIST_PARAMETERS:
            raise BadRequest(
                f"Unknown query parameter {name!r}.",
                [FieldError(("query", name), "unknown parameter; filter data as data.<key>=<value>")],
            )
    return tuple(sorted(filters))
