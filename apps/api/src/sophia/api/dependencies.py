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
from sophia.api.state import AppState
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


def _caller(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    async def caller(request: Request) -> Caller:
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
