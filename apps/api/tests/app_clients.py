"""An app of the tests' own settings, through its lifespan, with an in-process client on it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from sophia.api.app import create_app
from sophia.shared.settings import Settings


@asynccontextmanager
async def app_client(settings: Settings, secret: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client on `create_app(settings)`, authenticated with `secret` if given; the app stops after."""
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sophia.test", headers=headers
        ) as client:
            yield client
