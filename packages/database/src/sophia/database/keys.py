"""API keys: issued once in clear text, stored as a SHA-256 digest, looked up by digest."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sophia.database import outbox
from sophia.database.pool import Connection

SCOPES = ("read", "write", "admin")
KEY_PREFIX = "sk"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    name: str
    prefix: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def actor(self) -> str:
        """How its writes are attributed (events, the audit trail): its public prefix, never the secret."""
        return f"key/{self.prefix}"


def digest(secret: str) -> bytes:
    """Keys carry 256 random bits, so a plain SHA-256 is enough (no slow KDF on the hot path)."""
    return hashlib.sha256(secret.encode()).digest()


async def create(
    connection: Connection,
    name: str,
    scope: str,
    actor: str = "cli",
    *,
    show: Callable[[str], None] | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is shown once and never stored; audited as `actor`'s.
    `show(secret)` runs before the key is committed: a secret that cannot be shown (it raises)
    leaves no key behind."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    async with connection.transaction():
        row = await connection.fetchrow(
            """INSERT INTO sophia_core.api_keys (name, prefix, secret_hash, scope)
               VALUES ($1, $2, $3, $4) RETURNING id, name, prefix, scope, created_at, revoked_at""",
            name,
            prefix,
            digest(secret),
            scope,
        )
        await outbox.audit(connection, actor, "key.created", f"key/{prefix}", {"name": name, "scope": scope})
        if show is not None:
            show(secret)
    assert row is not None
    return ApiKey(**dict(row)), secret


async def active_prefixes(connection: Connection) -> list[str]:
    """The public prefixes of the keys not revoked."""
    rows = await connection.fetch("SELECT prefix FROM sophia_core.api_keys WHERE revoked_at IS NULL")
    return [row["prefix"] for row in rows]


async def find_active(connection: Connection, secret: str) -> ApiKey | None:
    row = await connection.fetchrow(
        """SELECT id, name, prefix, scope, created_at, revoked_at FROM sophia_core.api_keys
           WHERE secret_hash = $1 AND revoked_at IS NULL""",
        digest(secret),
    )
    return ApiKey(**dict(row)) if row else None


async def list_all(connection: Connection) -> list[ApiKey]:
    rows = await connection.fetch(
        "SELECT id, name, prefix, scope, created_at, revoked_at FROM sophia_core.api_keys ORDER BY created_at"
    )
    return [ApiKey(**dict(row)) for row in rows]


async def revoke(connection: Connection, prefix: str, actor: str = "cli") -> bool:
    async with connection.transaction():
        status = await connection.execute(
            "UPDATE sophia_core.api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
            prefix,
        )
        revoked = status.endswith(" 1")
        if revoked:
            await outbox.audit(connection, actor, "key.revoked", f"key/{prefix}", {})
    return revoked
