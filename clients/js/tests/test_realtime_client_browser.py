"""The real-time JS client (sophia/web/static/sophia-realtime.js) in a real browser: Debian's chromium,
driven by Playwright, against the real service, with a token from the real API. It receives a
channel's publications in order and, when the service goes away and comes back, reconnects with a
fresh token and resumes where it was: nothing missed, nothing twice."""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from app_clients import app_client
from browsers import chromium
from playwright.async_api import async_playwright
from record_events import publish, record_event
from waiting import eventually

from sophia.engines.process import free_port
from sophia.realtime.service import RealtimeService

pytestmark = pytest.mark.browser

CLIENT = Path(__file__).resolve().parents[3] / "apps/web/src/sophia/web/static/sophia-realtime.js"
PAGE = """<!doctype html>
<meta charset="utf-8">
<script type="module">
  import { SophiaRealtime } from "./sophia-realtime.js";
  window.seen = [];
  window.statuses = [];
  window.live = new SophiaRealtime({
    url: "%(url)s",
    token: () => window.sophiaToken(),
    onStatus: (status) => window.statuses.push(status),
  });
  window.live.subscribe("records:jsclient", (publication) => window.seen.push(publication.event.payload.n));
</script>
"""


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on loopback, as the platform serves its pages: Chromium refuses a
    page from anywhere else a connection to a local address (Local Network Access)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_the_client_receives_in_order_and_resumes_after_the_service_comes_back(
    own_streams, api_keys, tmp_path
):
    settings = own_streams.model_copy(update={"realtime_port": free_port("127.0.0.1")})
    url = f"ws://127.0.0.1:{settings.realtime_port}/ws"
    tokens = 0

    async def fresh_token() -> str:
        nonlocal tokens
        async with app_client(settings, api_keys["read"]) as api:
            answer = await api.post("/api/v1/realtime/token")
        tokens += 1
        return answer.json()["token"]

    (tmp_path / "index.html").write_text(PAGE % {"url": url}, encoding="utf-8")
    shutil.copy(CLIENT, tmp_path / CLIENT.name)
    errors: list[str] = []
    with static_server(tmp_path) as origin:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.expose_function("sophiaToken", fresh_token)
                service = await RealtimeService(settings).__aenter__()
                try:
                    await page.goto(f"{origin}/index.html")
                    await page.wait_for_function("window.statuses.includes('open')", timeout=15_000)
                    await eventually(lambda: service.hub.listened("records:jsclient"))
                    await publish(settings, [record_event("jsclient", "deal", n) for n in range(2)])
                    await page.wait_for_function("window.seen.length >= 2", timeout=15_000)
                finally:
                    await service.__aexit__(None, None, None)  # the client's connection drops (1012)
                await page.wait_for_function("window.statuses.includes('reconnecting')", timeout=15_000)
                await publish(
                    settings, [record_event("jsclient", "deal", n) for n in range(2, 4)]
                )  # while away
                async with RealtimeService(settings):  # back, on the same port
                    await page.wait_for_function("window.statuses.lastIndexOf('open') > 0", timeout=30_000)
                    await publish(settings, [record_event("jsclient", "deal", n) for n in range(4, 6)])
                    await page.wait_for_function("window.seen.length >= 6", timeout=15_000)
                    seen = await page.evaluate("window.seen")
                    statuses = await page.evaluate("window.statuses")
            finally:
                await browser.close()
    assert seen == [0, 1, 2, 3, 4, 5]
    assert statuses[0] == "open"
    assert "reconnecting" in statuses
    assert statuses[-1] == "open"
    assert tokens >= 2  # a fresh token for the reconnect
    assert errors == []
