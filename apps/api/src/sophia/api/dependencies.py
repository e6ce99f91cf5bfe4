"""The dependencies routes declare, defined once: `State` (keyless routes), and `Reader`, `Writer`
and `Admin`, which admit a key of at least that scope and hand the route its caller.

Each is one dependency with nothing nested under it: FastAPI solves every dependency afresh on each
request, and each solve costs a route about 80 interpreted calls (docs/benchmarks.md, "One
dependency a route"). A route needing both the key and the state takes one `Caller`, not two
dependencies, and Bearer auth is documented in the OpenAPI schema once for every gated path
(`document_bearer_auth`), not by a security dependency solved per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from sophia.api.auth import GATED_PREFIXES, authorize
from sophia.api.problems import BadRequest
from sophia.api.state import AppState
from sophia.core.documents import printable
from sophia.core.errors import FieldError
from sophia.database.keys import ApiKey

BEARER_SCHEME = "HTTPBearer"
BEARER_DESCRIPTION = "An API key from `sophia keys create`."
OPERATIONS = ("get", "put", "post", "delete", "patch", "head", "options")


async def app_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs a plain `def` dependency in a thread pool (a hop per request)."""
    return request.app.state.sophia  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls (their verified key) and what serves them (the process's state)."""

    key: ApiKey
    state: AppState


OPEN_QUERY = {"/api/v1/records": "data."}
"""Routes that take query parameters of a prefix beside their own, which they check themselves
(the records list's `data.<key>` filters, which may repeat: each must hold)."""
_QUERY_NAMES: dict[int, frozenset[str]] = {}


def check_query(request: Request) -> None:
    """`BadRequest` for a query parameter the route does not take, or one given twice: ignored, a
    typo (`form=` for `from=`) answered the unfiltered aggregate, and of two values the last won,
    so `?to=a&to=b` and `?to=b&to=a` meant different things."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    open_prefix = OPEN_QUERY.get(getattr(route, "path", ""))
    names = _QUERY_NAMES.get(id(dependant))
    if names is None:
        names = _QUERY_NAMES[id(dependant)] = frozenset(_query_names(dependant))
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if open_prefix is not None and name.startswith(open_prefix):
            continue
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise BadRequest(
                f"Unknown query parameter {printable(name)[:64]!r}; this route takes: {known}.",
                [FieldError(("query", printable(name)[:64]), "unknown parameter")],
            )
        if name in seen:
            raise BadRequest(
                f"Query parameter {name!r} is given twice; give it once.",
                [FieldError(("query", name), "given twice")],
            )
        seen.add(name)


def _query_names(dependant: Any) -> list[str]:
    names = [field.alias for field in dependant.query_params]
    for sub in dependant.dependencies:
        names += _query_names(sub)
    return names


def _caller(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    async def caller(request: Request) -> Caller:
        check_query(request)
        return Caller(await authorize(request, scope), request.app.state.sophia)

    caller.__name__ = f"{scope}_caller"
    return caller


State = Annotated[AppState, Depends(app_state)]
Reader = Annotated[Caller, Depends(_caller("read"))]
Writer = Annotated[Caller, Depends(_caller("write"))]
Admin = Annotated[Caller, Depends(_caller("admin"))]


def document_bearer_auth(app: FastAPI) -> None:
    """Make `app.openapi()` say that every operation under `GATED_PREFIXES` takes a Bearer key."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[BEARER_SCHEME] = {"type": "http", "scheme": "bearer", "description": BEARER_DESCRIPTION}
        for path, item in schema.get("paths", {}).items():
            if path.startswith(GATED_PREFIXES):
                for method in OPERATIONS:
                    if method in item:
                        item[method]["security"] = [{BEARER_SCHEME: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
