"""The audit trail: append entries to a hash chain, and verify the chain.

Each row's hash is SHA-256 over the previous row's hash and the row's canonical content (its event
id, time, actor, action, target and details as sorted-key JSON). Appends are serialized by a
transaction-scoped advisory lock, so the chain is one line however many sinks run; an event id
already in the trail is skipped, so a redelivered batch appends nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from sophia.database.pool import Connection

GENESIS = b"\x00" * 32
_LOCK = 0x5A0D17  # pg_advisory_xact_lock key of the audit chain


@dataclass(frozen=True, slots=True)
class AuditEntry:
    event_id: UUID
    occurred_at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, object]


@dataclass(frozen=True, slots=True)
class Broken:
    """Where the chain stops holding, and why."""

    seq: int
    reason: str


def chain_hash(previous: bytes, entry: AuditEntry) -> bytes:
    content = orjson.dumps(
        [
            str(entry.event_id),
            entry.occurred_at.astimezone(UTC).isoformat(),
            entry.actor,
            entry.action,
            entry.target,
            entry.details,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(previous + content).digest()


async def append(connection: Connection, entries: Sequence[AuditEntry]) -> int:
    """Append the entries not yet in the trail, chained; how many were new. Call in a transaction."""
    if not entries:
        return 0
    await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
    known = {
        row[0]
        for row in await connection.fetch(
            "SELECT event_id FROM sophia_core.audit_log WHERE event_id = ANY($1::uuid[])",
            [entry.event_id for entry in entries],
        )
    }
    previous = await connection.fetchval("SELECT hash FROM sophia_core.audit_log ORDER BY seq DESC LIMIT 1")
    previous = previous or GENESIS
    rows = []
    for entry in entries:
        if entry.event_id in known:
            continue
        known.add(entry.event_id)
        digest = chain_hash(previous, entry)
        rows.append(
            (
                entry.event_id,
                entry.occurred_at,
                entry.actor,
                entry.action,
                entry.target,
                entry.details,
                previous,
                digest,
            )
        )
        previous = digest
    if rows:
        await connection.copy_records_to_table(
            "audit_log",
            schema_name="sophia_core",
            records=rows,
            columns=("event_id", "occurred_at", "actor", "action", "target", "details", "prev_hash", "hash"),
        )
    return len(rows)


async def verify(connection: Connection, batch: int = 10_000) -> AsyncIterator[tuple[int, Broken | None]]:
    """Walk the chain in order: (rows checked so far, None) per batch, then a `Broken` at the first
    row whose link or hash does not hold (and stop). Call inside a transaction (a cursor)."""
    previous, checked = GENESIS, 0
    rows = connection.cursor(
        "SELECT seq, event_id, occurred_at, actor, action, target, details, prev_hash, hash "
        "FROM sophia_core.audit_log ORDER BY seq",
        prefetch=batch,
    )
    async for row in rows:
        entry = AuditEntry(row[1], row[2], row[3], row[4], row[5], row[6])
        if bytes(row[7]) != previous:
            yield checked, Broken(row[0], "its previous-hash does not match the row before it")
            return
        if chain_hash(previous, entry) != bytes(row[8]):
            yield checked, Broken(row[0], "its content does not match its hash")
            return
        previous = bytes(row[8])
        checked += 1
        if checked % batch == 0:
            yield checked, None
    yield checked, None


async def entries_for(connection: Connection, target: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` entries about `target` (a record's `source/kind/external_id`), newest first."""
    rows = await connection.fetch(
        """SELECT seq, occurred_at, actor, action, details FROM sophia_core.audit_log
           WHERE target = $1 ORDER BY seq DESC LIMIT $2""",
        target,
        limit,
    )
    return [dict(row) for row in rows]
