"""Who may call the gateway: a Sophia API key, or a JWT bearer token from a configured issuer;
at most `mcp_rate_per_s` requests a second per caller. Checked in front of the MCP app (pure
ASGI), before the body is read: a refused request costs a header parse, a key lookup remembered in
memory, and nothing of the MCP machinery.

| refused | status |
| --- | --- |
| no `Authorization: Bearer`, a key or token that does not verify | 401 with `WWW-Authenticate: Bearer` |
| an address sending keys that fail, over its limit | 429 with `Retry-After` |
| a caller over its request rate | 429 with `Retry-After` |
| PostgreSQL cannot be asked about a key not remembered | 503 with `Retry-After` |
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia.core.errors import SophiaError, TooManyRequests, Unauthorized, Unavailable
from sophia.database.verifier import KeyVerifier, bearer_secret
from sophia.mcp_gateway.providers import Caller
from sophia.shared.rates import TokenBucket
from sophia.shared.settings import Settings

CALLER_KEY = "sophia.caller"
"""Where the verified caller rides in the ASGI scope to the tool handlers."""
GATED_PATH = "/mcp"
ADMIN_PATH = "/admin/"
"""Also gated: the upstreams' admin routes (which then ask for the admin scope)."""
JWT_SCOPES = {"sophia:admin": "admin", "sophia:write": "write", "sophia:read": "read"}
"""A JWT's `scope` (space-separated, or a `scp` list) entries and the Sophia scope each grants."""
SCOPE_ORDER = ("admin", "write", "read")
MAX_TRACKED_CALLERS = 10_000


class JwtVerifier:
    """JWT bearer tokens of one issuer: signature (RS256/ES256/PS256 with a PEM public key, or
    HS256 with a shared secret), `iss`, `aud` if configured, `exp`, and a `sub`."""

    def __init__(self, issuer: str, key_file: Path, audience: str | None = None) -> None:
        text = key_file.read_text()
        self.issuer = issuer
        self.audience = audience
        if "-----BEGIN" in text:
            self.key: Any = text
            self.algorithms = ["RS256", "ES256", "PS256"]
        else:
            self.key = text.strip().encode()
            self.algorithms = ["HS256"]

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        if settings.mcp_jwt_issuer is None or settings.mcp_jwt_key_file is None:
            return None
        return cls(settings.mcp_jwt_issuer, settings.mcp_jwt_key_file, settings.mcp_jwt_audience)

    def verify(self, token: str) -> Caller:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as refused:
            raise Unauthorized(f"The bearer token is not valid: {refused}.") from None
        listed = claims.get("scp")
        granted = listed if isinstance(listed, list) else str(claims.get("scope", "")).split()
        scopes = {JWT_SCOPES[entry] for entry in granted if isinstance(entry, str) and entry in JWT_SCOPES}
        scope = next((name for name in SCOPE_ORDER if name in scopes), None)
        if scope is None:
            raise Unauthorized(f"The token grants none of {', '.join(JWT_SCOPES)} (its `scope` claim).")
        subject = str(claims["sub"])
        return Caller(f"jwt:{self.issuer}:{subject}", subject, scope, kind="jwt")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class GatewayAuth:
    """Pure ASGI in front of the MCP app: requests to `GATED_PATH` carry a verified `Caller` in
    `scope[CALLER_KEY]`, or are answered 401/429/503 here."""

    def __init__(
        self, app: ASGIApp, keys: KeyVerifier, tokens: JwtVerifier | None, rate_per_s: float
    ) -> None:
        self.app = app
        self.keys = keys
        self.tokens = tokens
        self.rate_per_s = rate_per_s
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path.rstrip("/") != GATED_PATH and not path.startswith(ADMIN_PATH):
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        client = scope.get("client")
        try:
            caller = await self.caller(header.decode("latin-1"), client[0] if client else "")
            self.admit(caller)
        except SophiaError as refused:
            await refuse(refused, send)
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    async def caller(self, header: str, address: str) -> Caller:
        secret = bearer_secret(header)
        if self.tokens is not None and looks_like_jwt(secret):
            return self.tokens.verify(secret)
        key = await self.keys.admit(secret, address)
        return Caller(str(key.id), key.prefix, key.scope)

    def admit(self, caller: Caller) -> None:
        """`TooManyRequests` when this caller is over its rate."""
        bucket = self._buckets.get(caller.key_id)
        if bucket is None:
            bucket = self._buckets[caller.key_id] = TokenBucket(self.rate_per_s)
            if len(self._buckets) > MAX_TRACKED_CALLERS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller.key_id)
        if not bucket.take():
            retry_s = max(1, math.ceil(bucket.wait_s()))
            raise TooManyRequests(
                f"More than {self.rate_per_s:g} requests a second with this key; retry in {retry_s} s.",
                retry_after_s=retry_s,
            )


async def refuse(error: SophiaError, send: Send) -> None:
    """A refusal as JSON (`{"error", "detail"}`), before any MCP message was read."""
    status = {Unauthorized: 401, TooManyRequests: 429, Unavailable: 503}.get(type(error), 400)
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sophia-mcp"'))
    retry_after = getattr(error, "retry_after_s", None)
    if status in (429, 503):
        headers.append((b"retry-after", str(retry_after or 2).encode()))
    body = orjson.dumps({"error": error.title, "detail": error.detail})
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
