"""Short-lived tokens that stand for an API key where a key cannot be sent: a browser's WebSocket
cannot set an `Authorization` header, so it asks the API for a token (with its key) and passes
the token in the URL instead of the key itself.

A token is `rt1.<claims>.<signature>`: the key's id, prefix and scope and an expiry, signed with
HMAC-SHA256 by a secret every API and real-time process reads from the database
(`service_secrets`, made at first use). It is checked without a database call, so a key revoked
after a token was issued still connects until the token expires (`TOKEN_TTL_S`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

import orjson

from sophia.core.errors import Unauthorized
from sophia.database.keys import ApiKey
from sophia.database.pool import Connection

TOKEN_VERSION = "rt1"  # noqa: S105 (a format tag, not a secret)
TOKEN_TTL_S = 60
REALTIME_SECRET = "realtime-token"  # noqa: S105 (the secret's name, not the secret)
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class TokenClaims:
    key_id: str
    prefix: str
    scope: str
    expires_at: float

    @property
    def actor(self) -> str:
        return f"key/{self.prefix}"


async def signing_secret(connection: Connection, name: str = REALTIME_SECRET) -> bytes:
    """The secret called `name`, made (32 random bytes) if no process has made it yet."""
    await connection.execute(
        """INSERT INTO sophia_core.service_secrets (name, secret) VALUES ($1, $2)
           ON CONFLICT (name) DO NOTHING""",
        name,
        os.urandom(32),
    )
    secret = await connection.fetchval("SELECT secret FROM sophia_core.service_secrets WHERE name = $1", name)
    return bytes(secret)


def issue(secret: bytes, key: ApiKey, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
    expires_at = (time.time() if now is None else now) + ttl_s
    claims = orjson.dumps({"k": str(key.id), "p": key.prefix, "s": key.scope, "e": round(expires_at, 3)})
    body = f"{TOKEN_VERSION}.{_b64(claims)}"
    return f"{body}.{_b64(_sign(secret, body))}"


def verify(secret: bytes, token: str, now: float | None = None) -> TokenClaims:
    """The claims of a token this secret signed and that has not expired; `Unauthorized` otherwise."""
    refused = Unauthorized(
        "The token is not valid or has expired; ask POST /api/v1/realtime/token for another."
    )
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise refused
    body, _, signature = token.rpartition(".")
    version, _, claims_part = body.partition(".")
    try:
        valid = version == TOKEN_VERSION and hmac.compare_digest(_unb64(signature), _sign(secret, body))
        claims = orjson.loads(_unb64(claims_part)) if valid else None
    except (ValueError, orjson.JSONDecodeError):
        raise refused from None
    if not isinstance(claims, dict):
        raise refused
    expires_at = claims.get("e")
    if not isinstance(expires_at, int | float) or expires_at <= (time.time() if now is None else now):
        raise refused
    return TokenClaims(str(claims["k"]), str(claims["p"]), str(claims["s"]), float(expires_at))


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) % 4 == 1:
        raise ValueError("not base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
