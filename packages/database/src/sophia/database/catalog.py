"""SQL for single records of the unified data catalog; reads come back as ready JSON text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from sophia.core.errors import NotFound, PreconditionFailed
from sophia.core.records import RecordFilter, RecordKey
from sophia.database.outbox import outbox_insert
from sophia.database.pool import Connection

CATALOG = "sophia_core.unified_data_catalog"

RECORD_JSON = """json_build_object(
    'id', c.id, 'source_system', c.source_system, 'kind', c.kind, 'external_id', c.external_id,
    'data', c.data, 'version', c.version, 'created_at', c.created_at,
    'updated_at', c.updated_at, 'deleted_at', c.deleted_at)::text"""
"""One record as JSON, built by Postgres so the API can return it without re-serializing."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as the API returns it: its JSON text and the version for the ETag."""

    id: UUID
    json: str
    version: int
    created: bool = False


_UPSERT = f"""
WITH written AS (
    INSERT INTO {CATALOG} AS c (source_system, kind, external_id, data, created_at)
    VALUES ($1, $2, $3, $4, coalesce($5, now()))
    ON CONFLICT (source_system, kind, external_id) DO UPDATE
        SET data = EXCLUDED.data, updated_at = now(), version = c.version + 1, deleted_at = NULL
    RETURNING c.*, (xmax = 0) AS created
), event AS ({outbox_insert("written", "record.upserted", "$6")})
SELECT c.id, c.version, c.created, {RECORD_JSON} AS json FROM written AS c
"""

_CREATE_ONLY = f"""
WITH written AS (
    INSERT INTO {CATALOG} AS c (source_system, kind, external_id, data, created_at)
    VALUES ($1, $2, $3, $4, coalesce($5, now()))
    ON CONFLICT (source_system, kind, external_id) DO UPDATE
        SET data = EXCLUDED.data, created_at = EXCLUDED.created_at, updated_at = now(),
            version = c.version + 1, deleted_at = NULL
        WHERE c.deleted_at IS NOT NULL  -- a deleted record has no current representation
    RETURNING c.*, true AS created
), event AS ({outbox_insert("written", "record.upserted", "$6")})
SELECT c.id, c.version, c.created, {RECORD_JSON} AS json FROM written AS c
"""

_UPDATE_IF_VERSION = f"""
WITH written AS (
    UPDATE {CATALOG} AS c
        SET data = $4, updated_at = now(), version = c.version + 1, deleted_at = NULL
    WHERE source_system = $1 AND kind = $2 AND external_id = $3 AND version = $5
      AND deleted_at IS NULL
    RETURNING c.*, false AS created
), event AS ({outbox_insert("written", "record.upserted", "$6")})
SELECT c.id, c.version, c.created, {RECORD_JSON} AS json FROM written AS c
"""

_DELETE = f"""
WITH written AS (
    UPDATE {CATALOG} AS c
        SET deleted_at = now(), updated_at = now(), version = c.version + 1
    WHERE source_system = $1 AND kind = $2 AND external_id = $3 AND deleted_at IS NULL
      AND ($4::bigint IS NULL OR version = $4)
    RETURNING c.*
), event AS ({outbox_insert("written", "record.deleted", "$5")})
SELECT id, version FROM written
"""

_CURRENT_VERSION = f"""
SELECT version FROM {CATALOG}
WHERE source_system = $1 AND kind = $2 AND external_id = $3 AND deleted_at IS NULL
"""

_GET = f"""
SELECT c.id, c.version, {RECORD_JSON} AS json FROM {CATALOG} AS c
WHERE c.id = $1 AND c.deleted_at IS NULL
"""


async def upsert(
    connection: Connection,
    key: RecordKey,
    data: dict[str, Any] | str,
    created_at: datetime | None = None,
    *,
    if_match: int | None = None,
    create_only: bool = False,
    actor: str | None = None,
) -> StoredRecord:
    """Insert or replace one record (and its outbox event) in one statement.

    `if_match`: replace only at that version; `create_only`: insert only if absent.
    Either failing raises `PreconditionFailed`. `actor` (who writes, e.g. `key/<prefix>`) goes
    into the event.
    """
    identity = (key.source_system, key.kind, key.external_id, data)
    if if_match is not None:
        row = await connection.fetchrow(_UPDATE_IF_VERSION, *identity, if_match, actor)
    elif create_only:
        row = await connection.fetchrow(_CREATE_ONLY, *identity, created_at, actor)
    else:
        row = await connection.fetchrow(_UPSERT, *identity, created_at, actor)
    if row is None:
        raise PreconditionFailed(_precondition_detail(key, if_match, create_only))
    return StoredRecord(row["id"], row["json"], row["version"], row["created"])


def _precondition_detail(key: RecordKey, if_match: int | None, create_only: bool) -> str:
    where = f"{key.source_system}/{key.kind}/{key.external_id}"
    if create_only:
        return f"Record {where} already exists (If-None-Match: *)."
    return f"Record {where} is not at version {if_match}; read it again and retry."


async def soft_delete(
    connection: Connection, key: RecordKey, if_match: int | None = None, *, actor: str | None = None
) -> tuple[UUID, int]:
    """Mark a record deleted; returns its id and new version. `NotFound` / `PreconditionFailed`."""
    row = await connection.fetchrow(_DELETE, key.source_system, key.kind, key.external_id, if_match, actor)
    if row is not None:
        return row["id"], int(row["version"])
    current = await connection.fetchval(_CURRENT_VERSION, key.source_system, key.kind, key.external_id)
    if current is None:
        raise NotFound(f"No record {key.source_system}/{key.kind}/{key.external_id}.")
    raise PreconditionFailed(_precondition_detail(key, if_match, False))


async def get(connection: Connection, record_id: UUID) -> StoredRecord:
    row = await connection.fetchrow(_GET, record_id)
    if row is None:
        raise NotFound(f"No record with id {record_id}.")
    return StoredRecord(row["id"], row["json"], row["version"])


def filter_clauses(where: RecordFilter, args: list[Any]) -> list[str]:
    """SQL conditions on the catalog (aliased `c`) for `where`, live records only; their values
    are appended to `args` and referenced as `$n`, never spliced into the SQL."""
    clauses = ["c.deleted_at IS NULL"]

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.source_system is not None:
        clauses.append(f"c.source_system = {bind(where.source_system)}")
    if where.kind is not None:
        clauses.append(f"c.kind = {bind(where.kind)}")
    if where.updated_since is not None:
        clauses.append(f"c.updated_at >= {bind(where.updated_since)}")
    for name, value in where.data:
        candidates = [orjson.dumps({name: value}).decode()]
        scalar = _json_scalar(value)
        if scalar is not None:  # "12000" also matches the number 12000, "true" the boolean
            candidates.append("{" + orjson.dumps(name).decode() + ":" + scalar + "}")
        tests = [f"c.data @> {bind(candidate)}::jsonb" for candidate in candidates]
        clauses.append(tests[0] if len(tests) == 1 else f"({' OR '.join(tests)})")
    return clauses


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,999})(?:\.[0-9]{1,1000})?(?:[eE][+-]?[0-9]{1,3})?")
"""A JSON number PostgreSQL's `numeric` holds exactly (jsonb keeps numbers so)."""


def _json_scalar(text: str) -> str | None:
    """The JSON number or boolean `text` spells, as JSON text (a query string gives every value as
    text), or None. Kept as written, not parsed: a double would round 2**53 + 1, or an integer of
    30 digits, to a neighbour, and match the records holding that neighbour."""
    if text in ("true", "false") or _JSON_NUMBER.fullmatch(text):
        return text
    return None


async def list_page(
    connection: Connection, where: RecordFilter, after: UUID | None, limit: int, *, timeout_s: float
) -> list[StoredRecord]:
    """Up to `limit` live records matching `where`, in id order, after the id `after`; a query
    still running after `timeout_s` is cancelled on the server (`TimeoutError`)."""
    args: list[Any] = []
    clauses = filter_clauses(where, args)
    if after is not None:
        args.append(after)
        clauses.append(f"c.id > ${len(args)}")
    args.append(limit)
    sql = (
        f"SELECT c.id, c.version, {RECORD_JSON} AS json FROM {CATALOG} AS c "
        f"WHERE {' AND '.join(clauses)} ORDER BY c.id LIMIT ${len(args)}"
    )
    rows = await connection.fetch(sql, *args, timeout=timeout_s)
    return [StoredRecord(row["id"], row["json"], row["version"]) for row in rows]
