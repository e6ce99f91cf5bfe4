"""Swagger UI at /docs and ReDoc at /redoc, on scripts and styles that the API serves itself.

FastAPI's own docs pages load Swagger UI and ReDoc from cdn.jsdelivr.net (and ReDoc's fonts from
Google): blank pages on a machine without internet. These pages are FastAPI's, pointed at copies of
the npm packages vendored under `static/vendor/<package>-<version>/` (refreshed by
`scripts/vendor_assets.py`) and served under `/static`: they reference nothing outside the API.
Like every path outside `/api/v1/`, they need no key.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
IMMUTABLE = "public, max-age=31536000, immutable"
"""For a file whose path names its version: what is at that URL never changes."""
_VERSION_FOLDER = r"-\d[0-9A-Za-z.+-]*"


class VersionedStaticFiles(StaticFiles):
    """Static files; those under `vendor/<package>-<version>/` are cached by browsers for a year
    without revalidation (a new version is a new path). Other files keep Starlette's validators."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        parts = Path(path).parts
        if len(parts) == 3 and parts[0] == "vendor" and re.search(_VERSION_FOLDER, parts[1]):
            response.headers["cache-control"] = IMMUTABLE
        return response


def vendored(package: str) -> str:
    """The URL path, under `STATIC_URL`, of the one vendored version of `package`."""
    vendor = STATIC_DIR / "vendor"
    pattern = re.compile(re.escape(package) + _VERSION_FOLDER)
    versions = [entry.name for entry in vendor.iterdir() if entry.is_dir()]
    found = sorted(name for name in versions if pattern.fullmatch(name))
    if len(found) != 1:
        raise RuntimeError(
            f"expected one vendored version of {package} in {vendor}, found {found or 'none'} "
            "(run `python scripts/vendor_assets.py`)"
        )
    return f"{STATIC_URL}/vendor/{found[0]}"


def install(app: FastAPI) -> None:
    """Serve `/static`, `/docs`, `/docs/oauth2-redirect` and `/redoc` (none in the OpenAPI schema).

    The app must be made with `docs_url=None, redoc_url=None`, so FastAPI adds no pages of its own."""
    if app.docs_url or app.redoc_url:
        raise ValueError("make the app with docs_url=None, redoc_url=None: FastAPI's pages load from a CDN")
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = vendored("swagger-ui-dist")
    redoc = vendored("redoc")
    favicon = f"{swagger}/favicon-32x32.png"
    app.mount(STATIC_URL, VersionedStaticFiles(directory=STATIC_DIR), name="static")

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
