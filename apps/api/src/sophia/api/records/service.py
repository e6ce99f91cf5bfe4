"""Record use cases: single writes, streamed bulk ingest, reads and pages. No HTTP here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import BinaryIO
from uuid import UUID

import orjson
from pydantic import ValidationError

from sophia.api.pages import json_page
from sophia.api.records.schemas import RecordLine, check_storable
from sophia.api.records.spool import Spool, Spools
from sophia.cache import CacheResult, Loaded, TieredCache
from sophia.cache.catalog import catalog_changed, list_key, list_tags, record_key
from sophia.core.cursor import decode_cursor, filter_fingerprint, split_page
from sophia.core.documents import nesting_possible
from sophia.core.errors import FieldError, Invalid, Unavailable
from sophia.core.records import RecordFilter, RecordKey
from sophia.database import Database, catalog, ingest
from sophia.database.catalog import StoredRecord
from sophia.database.ingest import BulkResult, StagedRow
from sophia.shared.metrics import INGESTED_RECORDS


async def put_record(
    database: Database,
    cache: TieredCache,
    key: RecordKey,
    data: dict[str, object],
    created_at: datetime | None,
    *,
    if_match: int | None,
    create_only: bool,
    actor: str,
) -> StoredRecord:
    async with database.connection() as connection:
        stored = await catalog.upsert(
            connection, key, data, created_at, if_match=if_match, create_only=create_only, actor=actor
        )
    INGESTED_RECORDS.labels("single").inc()
    await catalog_changed(cache, [stored.id], [(key.source_system, key.kind)], max_keys=1)
    return stored


async def delete_record(
    database: Database, cache: TieredCache, key: RecordKey, if_match: int | None, *, actor: str
) -> int:
    async with database.connection() as connection:
        record_id, version = await catalog.soft_delete(connection, key, if_match, actor=actor)
    await catalog_changed(cache, [record_id], [(key.source_system, key.kind)], max_keys=1)
    return version


async def get_record(database: Database, cache: TieredCache, record_id: UUID) -> CacheResult:
    """The record's JSON and its version as the ETag, from the cache when it holds them."""

    async def load() -> Loaded:
        async with database.connection() as connection:
            stored = await catalog.get(connection, record_id)
        return Loaded(stored.json.encode(), str(stored.version))

    # Its own class: every write invalidates a record by id, so it can stay fresh longer than the
    # pages and views (10,000 ids read at random were reloaded once a minute each under `api`).
    return await cache.get_or_load(record_key(record_id), load, "record")


async def list_records(
    database: Database,
    cache: TieredCache,
    where: RecordFilter,
    cursor: str | None,
    limit: int,
    *,
    timeout_s: float,
) -> CacheResult:
    """One page in id order (stable under concurrent inserts) with the cursor of the next, as the
    response's JSON, from the cache when it holds it."""
    fingerprint = filter_fingerprint(where)
    after = decode_cursor(cursor, fingerprint) if cursor else None  # a bad cursor is never cached

    async def load() -> bytes:
        async with database.connection() as connection:
            try:
                rows = await catalog.list_page(connection, where, after, limit + 1, timeout_s=timeout_s)
            except TimeoutError:
                raise Unavailable(
                    f"The list query ran past its {timeout_s:g} s limit and was cancelled; "
                    "narrow its filters (source_system, kind, updated_since).",
                    retry_after_s=1,
                ) from None
        page, next_cursor = split_page(rows, limit, lambda row: row.id, fingerprint)
        return json_page((row.json for row in page), next_cursor)

    return await cache.get_or_load(list_key(where, cursor, limit), load, "api", tags=list_tags(where))


async def split_lines(chunks: AsyncIterable[bytes], max_line_bytes: int) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) from a byte stream, holding at most one line in memory.

    Linear in the body: a chunk is scanned once, and the pieces of a line that spans chunks are
    joined once, when its end arrives (appending each chunk to the pending line and splitting it
    again was quadratic in the line's length)."""
    pieces: list[bytes] = []  # of the line not yet ended
    held = 0
    number = 0
    async for chunk in chunks:
        *ended, rest = chunk.split(b"\n")
        for index, line in enumerate(ended):
            if index == 0 and pieces:
                pieces.append(line)
                line = b"".join(pieces)
                pieces.clear()
                held = 0
            number += 1
            if len(line) > max_line_bytes:
                raise _line_too_long(number, max_line_bytes)
            yield number, line
        if rest:
            pieces.append(rest)
            held += len(rest)
            if held > max_line_bytes:
                raise _line_too_long(number + 1, max_line_bytes)
    last = b"".join(pieces)
    if last.strip():
        yield number + 1, last


def _line_too_long(number: int, max_line_bytes: int) -> Invalid:
    return Invalid(
        f"Line {number} is longer than {max_line_bytes} bytes. Nothing was written.",
        [FieldError(("line", number), f"longer than {max_line_bytes} bytes")],
    )


def _check_line_storable(number: int, line: bytes, record: RecordLine) -> None:
    """What pydantic accepts but PostgreSQL refuses, found cheaply on the raw line."""
    problem = None
    try:
        orjson.loads(line)  # strict JSON: no NaN or Infinity, no number beyond a double
    except orjson.JSONDecodeError as error:
        problem = f"not storable JSON ({error})"
    if problem is None and (b"\\u0000" in line or nesting_possible(line)):
        try:
            check_storable(record.data)
        except ValueError as error:
            problem = str(error)
    if problem is not None:
        raise Invalid(
            f"Line {number}, field data: {problem}. Nothing was written.",
            [FieldError(("line", number, "data"), problem)],
        )


def parse_line(number: int, line: bytes) -> StagedRow:
    """Validate one NDJSON line; `Invalid` names the line and the field."""
    try:
        record = RecordLine.model_validate_json(line)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(line)"
        errors = [
            FieldError(("line", number, *(str(p) for p in item["loc"])), item["msg"])
            for item in error.errors()
        ]
        raise Invalid(f"Line {number}, field {field}: {first['msg']}. Nothing was written.", errors) from None
    _check_line_storable(number, line, record)
    return (
        number,
        record.source_system,
        record.kind,
        record.external_id,
        line.decode(),
        record.created_at,
    )


async def spool_rows(
    chunks: AsyncIterable[bytes], spool: Spool, max_line_bytes: int, scopes: set[tuple[str, str]]
) -> int:
    """Check every line and write it to `spool` in binary COPY format; the rows spooled. Nothing
    of the database is held meanwhile."""
    received = 0
    await spool.write(ingest.COPY_HEADER)
    async for number, line in split_lines(chunks, max_line_bytes):
        if line.strip():
            row = parse_line(number, line)
            scopes.add((row[1], row[2]))
            await spool.write(ingest.copy_row(row))
            received += 1
    await spool.write(ingest.COPY_TRAILER)
    return received


_COPY_ROW = re.compile(r"^COPY \w+, line (\d+)", re.MULTILINE)
"""Where PostgreSQL says a COPY failed: the row, counted from 1."""


async def _naming_the_line(error: Invalid, rows: BinaryIO) -> Invalid:
    """`error` naming the line and PostgreSQL's reason when PostgreSQL refused a value of a row as
    COPY read it: what the checks of `parse_line` let through (a NUL escaped in a value that a
    duplicate key replaced, a number past numeric's scale, ...). Else `error` as it is."""
    cause = error.__cause__
    found = _COPY_ROW.search(str(getattr(cause, "context", None) or ""))
    if found is None:
        return error
    number = await asyncio.to_thread(ingest.line_of_row, rows, int(found[1]))
    reasons = (getattr(cause, name, None) for name in ("message", "detail"))
    problem = f"PostgreSQL cannot store it ({' '.join(str(reason) for reason in reasons if reason)})"
    return Invalid(f"Line {number}: {problem}. Nothing was written.", [FieldError(("line", number), problem)])


async def bulk_ingest(
    database: Database,
    cache: TieredCache | None,
    chunks: AsyncIterable[bytes],
    max_line_bytes: int,
    max_invalidate_keys: int,
    *,
    spools: Spools,
    actor: str | None,
) -> BulkResult:
    """All lines or none: a bad line anywhere aborts the whole batch. The body is read and checked
    first (spooled within `spools`' budget: to memory, then to a temporary file); a connection is
    taken only for the COPY and the merge."""
    settings = database.settings
    scopes: set[tuple[str, str]] = set()
    with spools.spool() as spool:
        # a body that stops arriving is refused where every body is read (the middleware: 408)
        received = await spool_rows(chunks, spool, max_line_bytes, scopes)
        rows = await spool.finish()
        try:
            async with database.connection() as connection:
                result = await ingest.bulk_upsert(
                    connection,
                    rows,
                    received,
                    max_invalidate_keys,
                    settings.db_maintenance_timeout_s,
                    actor=actor,
                )
        except Invalid as error:
            named = await _naming_the_line(error, rows)
            if named is error:
                raise
            raise named from error
    INGESTED_RECORDS.labels("bulk").inc(result.received)
    if cache is None:  # no stack running (`sophia up` seeding before the API starts)
        return result
    # Created records are new ids nothing can have cached, but they change lists; `updated_ids`
    # holds at most `max_invalidate_keys` ids, so past that, `updated` says to clear everything.
    if result.updated > max_invalidate_keys:
        await cache.clear()
    else:
        await catalog_changed(cache, result.updated_ids, scopes, max_keys=max_invalidate_keys)
    return result
