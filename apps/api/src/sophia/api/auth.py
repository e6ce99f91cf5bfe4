"""API-key authentication: Bearer keys verified against their stored digest, scopes enforced per route."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia.api import problems
from sophia.core.errors import Forbidden, SophiaError
from sophia.database.keys import ApiKey
from sophia.database.verifier import SCOPE_RANK, KeyVerifier, bearer_secret
from sophia.web.session import SAFE_METHODS, cookie_secret, cross_site

__all__ = [
    "GATED_PREFIXES",
    "SCOPE_KEY",
    "KeyGate",
    "KeyVerifier",
    "authorize",
    "bearer_secret",
]

SCOPE_KEY = "sophia.api_key"
"""Where `KeyGate` leaves the verified key in the request's scope (its own key: a server may share
`scope["state"]` between requests)."""
GATED_PREFIXES = ("/api/v1/", "/v1/")
"""Every route under these needs a key: it is checked before anything of the body is read."""


class KeyGate:
    """Pure ASGI, outside routing: a request under `GATED_PREFIXES` is answered 401 (no key, a key
    that does not verify) or 429 (an address sending bad keys) before its body is read or parsed;
    a verified key rides in the scope (`SCOPE_KEY`) to the route, which checks its scope.

    Without an `Authorization` header, the dashboard's session cookie stands for the key it was
    signed in with (`sophia.web.session`); a write so authenticated must come from this origin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GATED_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        client = scope.get("client")
        try:
            session = None if header else cookie_secret(scope)
            if session is not None and scope["method"] not in SAFE_METHODS and cross_site(scope):
                raise Forbidden("A write signed in by the dashboard's cookie must come from its own pages.")
            secret = session or bearer_secret(header.decode("latin-1"))
            verifier: KeyVerifier = scope["app"].state.sophia.keys
            key = await verifier.admit(secret, client[0] if client else "")
        except SophiaError as error:
            scope[problems.LOG_KIND_KEY] = "key gate"
            response = await problems.sophia_error(StarletteRequest(scope), error)
            await response(scope, receive, send)
            return
        scope[SCOPE_KEY] = key
        await self.app(scope, receive, send)


async def authorize(request: Request, scope: str) -> ApiKey:
    """The caller's key (verified by `KeyGate`, or here when a route is reached without it) if it
    has at least `scope`. Routes reach it through `sophia.api.dependencies` (`Reader`, `Writer`,
    `Admin`); the read by id, the hottest route, calls it directly, with no dependency at all."""
    key: ApiKey | None = request.scope.get(SCOPE_KEY)
    if key is None:
        secret = bearer_secret(request.headers.get("authorization", ""))
        key = await request.app.state.sophia.keys.verify(secret)
    if SCOPE_RANK[key.scope] < SCOPE_RANK[scope]:
        raise Forbidden(f"This needs a key with the {scope!r} scope; this key has {key.scope!r}.")
    return key
