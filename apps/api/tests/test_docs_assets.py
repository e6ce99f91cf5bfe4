"""The docs pages work without internet: /docs and /redoc load only files that the API serves itself
(vendored Swagger UI and ReDoc), need no key, and the versioned files are cached for good."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import httpx
import pytest

from sophia.web.assets import IMMUTABLE, STATIC_DIR

ROOT = Path(__file__).resolve().parents[3]
PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]
REFERENCE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
ELSEWHERE = re.compile(r"""https?:|["'(=]\s*//""", re.IGNORECASE)
"""Anything in a page that could name another host: a scheme, or a scheme-relative `//host`."""
CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},  # Python's mimetypes: either, by version
    ".css": {"text/css"},
    ".png": {"image/png"},
}
SMALLEST_BUNDLE_BYTES = 500_000
"""Swagger UI's bundle is about 1.7 MB and ReDoc's about 1.1 MB: far less is not the real file."""


@pytest.fixture(scope="module")
async def anonymous(app):
    """A client on the shared app that sends no key, as a browser opening /docs does."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        yield http


async def referenced(client: httpx.AsyncClient, page: str) -> list[str]:
    response = await client.get(page)
    assert response.status_code == 200, response.text
    return REFERENCE.findall(response.text)


@pytest.mark.parametrize("page", PAGES)
async def test_a_docs_page_is_html_that_names_no_other_host(anonymous, page):
    response = await anonymous.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert ELSEWHERE.search(response.text) is None, ELSEWHERE.search(response.text)
    for url in REFERENCE.findall(response.text):
        assert url.startswith("/"), url
        assert not url.startswith("//"), url


@pytest.mark.parametrize(("page", "least"), [("/docs", {".js", ".css", ".png"}), ("/redoc", {".js", ".png"})])
async def test_every_file_a_page_loads_is_served_with_its_type_and_cached_for_good(anonymous, page, least):
    urls = await referenced(anonymous, page)
    assert {Path(url).suffix for url in urls} >= least, urls
    for url in urls:
        response = await anonymous.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].split(";")[0] in CONTENT_TYPES[Path(url).suffix], url
        assert response.headers["cache-control"] == IMMUTABLE, url
        assert int(response.headers["content-length"]) == len(response.content) > 0


async def test_the_pages_load_the_vendored_swagger_ui_and_redoc_bundles(anonymous):
    urls = [url for page in ("/docs", "/redoc") for url in await referenced(anonymous, page)]
    scripts = [url for url in urls if url.endswith(".js")]
    assert [Path(url).name for url in scripts] == ["swagger-ui-bundle.js", "redoc.standalone.js"]
    for url in scripts:
        body = (await anonymous.get(url)).content
        assert len(body) > SMALLEST_BUNDLE_BYTES, url
        assert body == (STATIC_DIR / url.removeprefix("/static/")).read_bytes()


async def test_swagger_ui_and_redoc_read_the_apis_own_schema(anonymous):
    assert "url: '/openapi.json'" in (await anonymous.get("/docs")).text
    assert '<redoc spec-url="/openapi.json">' in (await anonymous.get("/redoc")).text
    assert (await anonymous.get("/openapi.json")).status_code == 200


async def test_behind_a_proxy_prefix_the_pages_name_their_files_under_it(app):
    transport = httpx.ASGITransport(app=app, root_path="/sophia")
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        for page in ("/docs", "/redoc"):
            urls = await referenced(http, page)
            assert urls, page
            assert all(url.startswith("/sophia/static/vendor/") for url in urls), urls


async def test_the_docs_routes_and_files_are_not_in_the_openapi_schema(anonymous):
    paths = (await anonymous.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc", "/static"))]


async def test_a_file_that_is_not_there_is_a_404_problem_that_is_not_cached(anonymous):
    response = await anonymous.get("/static/vendor/redoc-0.0.0/redoc.standalone.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "cache-control" not in response.headers
    assert (await anonymous.get("/static/../app.py")).status_code == 404


async def test_a_cached_file_is_revalidated_with_a_304(anonymous):
    url = next(url for url in await referenced(anonymous, "/redoc") if url.endswith(".js"))
    etag = (await anonymous.get(url)).headers["etag"]
    response = await anonymous.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.headers["cache-control"] == IMMUTABLE


def test_the_vendored_files_are_those_the_vendoring_script_names(capsys):
    """The script's `--check`, in this process: a new interpreter took longer than the check."""
    script = runpy.run_path(str(ROOT / "scripts" / "vendor_assets.py"))  # not as __main__: no exit
    status = script["main"](["--check"])
    said = capsys.readouterr()
    assert status == 0, said.err
    assert "swagger-ui-dist@" in said.out, said.out
    assert "redoc@" in said.out, said.out
