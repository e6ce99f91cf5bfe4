"""An app of the tests' own settings, through its lifespan, with an in-process client on it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from sophia.api.app import create_app
from sophia.shared.settings import Settings


@asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """`create_app(settings)`, started through its lifespan; stopped after."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def client_of(app: FastAPI, secret: str | None = None) -> httpx.AsyncClient:
    """An in-process client on a started `app`, authenticated with `secret` if given."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sophia.test", headers=headers
    )


@asynccontextmanager
async def app_client(settings: Settings, secret: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client on `create_app(settings)`, authenticated with `secret` if given; the app stops after."""
    async with started_app(settings) as app, client_of(app, secret) as client:
        yield client


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> dict[str, Any]:
    """An ASGI HTTP scope as a server hands it over, for a test that drives the app itself (what
    httpx cannot send: a URL past 64 KiB, a client that goes away mid-body)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"sophia.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("sophia.test", 80),
    }
