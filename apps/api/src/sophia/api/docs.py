"""Swagger UI at /docs and ReDoc at /redoc, on scripts and styles that the API serves itself.

FastAPI's own docs pages load Swagger UI and ReDoc from cdn.jsdelivr.net (and ReDoc's fonts from
Google): blank pages on a machine without internet. These pages are FastAPI's, pointed at copies of
the npm packages vendored by `sophia.web.assets` and served under `/static`: they reference
nothing outside the API.
Like every path outside `/api/v1/`, they need no key.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse

from sophia.web.assets import STATIC_URL, static_files, vendored

DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"


def install(app: FastAPI) -> None:
    """Serve `/static`, `/docs`, `/docs/oauth2-redirect` and `/redoc` (none in the OpenAPI schema).

    The app must be made with `docs_url=None, redoc_url=None`, so FastAPI adds no pages of its own."""
    if app.docs_url or app.redoc_url:
        raise ValueError("make the app with docs_url=None, redoc_url=None: FastAPI's pages load from a CDN")
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = vendored("swagger-ui-dist")
    redoc = vendored("redoc")
    favicon = f"{swagger}/favicon-32x32.png"
    app.mount(STATIC_URL, static_files(), name="static")

    def root_path(request: Request) -> str:
        """The prefix a proxy serves the API under (empty without one), as FastAPI's pages use it."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{swagger}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{swagger}/swagger-ui.css",
            swagger_favicon_url=root + favicon,
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            init_oauth=app.swagger_ui_init_oauth,
            # No badge from validator.swagger.io (BaseLayout shows none today; this keeps it so).
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc_page(request: Request) -> HTMLResponse:
        root = root_path(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{redoc}/redoc.standalone.js",
            redoc_favicon_url=root + favicon,
            with_google_fonts=False,
        )

    # Plain routes, as FastAPI adds its own (GET and HEAD, no dependency solving).
    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc_page, include_in_schema=False)
