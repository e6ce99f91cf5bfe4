"""Dashboard sessions: an API key exchanged, at sign-in, for a session secret that the browser
keeps in an HttpOnly cookie. The secret stands for the key (its scope, its attribution) until the
session expires, is ended at sign-out, or its key is revoked; like a key, only its SHA-256 is
stored. `KeyVerifier` verifies both shapes, so a session gets the same memory, miss limits and
per-address failure limits as a key."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from sophia.database.keys import ApiKey, digest
from sophia.database.pool import Connection

SESSION_PREFIX = "ss_"
SESSION_SHAPE = re.compile(SESSION_PREFIX + r"[A-Za-z0-9_\-]{43}")
"""What `create` issues: `ss_<43 url-safe base64>` (256 random bits)."""
EXPIRED_KEPT = timedelta(days=1)
"""Expired sessions are deleted at the next sign-in once this old (nothing reads them)."""


async def create(connection: Connection, key: ApiKey, ttl_s: float) -> str:
    """A new session of `key`, valid `ttl_s` seconds; its secret, which is never stored."""
    secret = f"{SESSION_PREFIX}{secrets.token_urlsafe(32)}"
    async with connection.transaction():
        await connection.execute(
            "DELETE FROM sophia_core.web_sessions WHERE expires_at < now() - $1::interval", EXPIRED_KEPT
        )
        await connection.execute(
            """INSERT INTO sophia_core.web_sessions (secret_hash, key_id, expires_at)
               VALUES ($1, $2, now() + $3::interval)""",
            digest(secret),
            key.id,
            timedelta(seconds=ttl_s),
        )
    return secret


async def find_active(connection: Connection, secret: str) -> ApiKey | None:
    """The key a live session stands for (not expired, not ended, its key not revoked)."""
    row = await connection.fetchrow(
        """SELECT k.id, k.name, k.prefix, k.scope, k.created_at, k.revoked_at
           FROM sophia_core.web_sessions s JOIN sophia_core.api_keys k ON k.id = s.key_id
           WHERE s.secret_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL""",
        digest(secret),
    )
    return ApiKey(**dict(row)) if row else None


async def end(connection: Connection, secret: str) -> bool:
    """End the session (sign-out); whether there was one."""
    status = await connection.execute(
        "DELETE FROM sophia_core.web_sessions WHERE secret_hash = $1", digest(secret)
    )
    return bool(status.endswith(" 1"))
