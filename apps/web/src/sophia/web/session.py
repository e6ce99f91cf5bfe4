"""The dashboard's session cookie: what it is called, how it is set and cleared, and how a request
carries it. The secret in it (`sophia.database.sessions`) is verified like an API key, by
`KeyVerifier`, wherever it arrives: the dashboard's pages and the REST API its scripts call.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and
Secure when the page came over HTTPS. A request authenticated by the cookie that changes something
must also come from a page of this origin (`cross_site`): SameSite is the browser's promise; the
Fetch metadata and Origin headers are checked as well.
"""

from __future__ import annotations

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Scope

from sophia.database.sessions import SESSION_SHAPE

SESSION_COOKIE = "sophia_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def cookie_secret(scope: Scope) -> str | None:
    """The session secret in the request's cookies, if they carry one of a session's shape (an API
    key in the cookie is no session). Cookies are read as browsers write them, every `Cookie`
    header, by Starlette's lenient parser: `SimpleCookie` dropped the whole header, or all of it
    after, at a cookie it does not take (a JSON value, a space, a nameless cookie), so any other
    app of the same host could keep the dashboard signed out."""
    sent = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == b"cookie"]
    header = "; ".join(sent)
    if SESSION_COOKIE not in header:
        return None
    secret = cookie_parser(header).get(SESSION_COOKIE)
    return secret if secret and SESSION_SHAPE.fullmatch(secret) else None


def cross_site(scope: Scope) -> bool:
    """Whether the request says it came from another site's page (`Sec-Fetch-Site`), or names an
    `Origin` other than the host it was sent to."""
    fetched_from = _header(scope, b"sec-fetch-site")
    if fetched_from is not None and fetched_from not in ("same-origin", "none"):
        return True
    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = _header(scope, b"host") or ""
    return origin.partition("://")[2] != host


def set_session_cookie(response: Response, secret: str, ttl_s: float, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ttl_s),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
