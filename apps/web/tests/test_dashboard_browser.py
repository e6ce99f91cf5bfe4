"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a whole stack on
loopback (the API serving the pages, the workers with the models, the real-time service: each a
process of its own, on this module's database, cache namespace and streams, with demo data in it).

Signing in keeps the key and the session out of the page's scripts; every view renders without a
script error and goes live; a write through the REST API shows on an open page without a reload;
the search box marks what it matched; the ops view refreshes on the real-time service's ticks; a
dropped WebSocket comes back and catches up. Each view's screenshot goes to the test's folder, and
to `$SOPHIA_SCREENSHOTS` when set (`SOPHIA_SCREENSHOTS=docs/images` makes the docs' pictures).
Latency, page weight and paint times are printed, not asserted: they measure the machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsers import chromium
from playwright.async_api import Browser, ConsoleMessage, Page, Response, ViewportSize, async_playwright
from streams import delete_streams
from waiting import eventually

from sophia.cli.demo_data import generate, to_ndjson
from sophia.database import Database, keys
from sophia.engines.process import SupervisedProcess, free_ports
from sophia.shared.settings import Settings
from sophia.web.session import SESSION_COOKIE

pytestmark = pytest.mark.browser

HOST = "127.0.0.1"
PROCESSES = {"api": "sophia.api.server", "workers": "sophia.workers", "realtime": "sophia.realtime"}
"""The stack's processes: name -> the module `python -m` runs."""
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
SCREENSHOTS_VARIABLE = "SOPHIA_SCREENSHOTS"
DEMO_RECORDS = 240
CLOSED_STAGES = frozenset({"closedwon", "closedlost"})
SHOWN_TIMEOUT_MS = 10_000
"""How long a change may take to show before the test fails: generous, CI machines are slow; what
it took is printed."""
RECONNECT_TIMEOUT_MS = 30_000
"""The client's backoff reaches seconds while the service is away."""
RENEWAL = "Harbor Health Holdings - Enterprise plan (Renewal)"
EXPANSION = "Driftwood Motors Co - Analytics add-on (Expansion)"

STAGE_SHOWN = """([id, stage]) => document
    .querySelector(`#deals-table tr[data-id="${id}"] td.stage`)?.textContent.trim().startsWith(stage)"""
PIPELINE_SHOWN = 'stage => document.querySelector(`#pipeline tr[data-stage="${stage}"] td[data-deals]`)'
SUBSCRIBED = "channels => channels.every((channel) => window.sophiaLive?.position(channel))"
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-chart]')]
    .every((box) => box.childElementCount || box.textContent)"""
PAGE_TIMING = """() => ({
    paints: Object.fromEntries(performance.getEntriesByType('paint').map((p) => [p.name, p.startTime])),
    transferred: [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
        .reduce((sum, entry) => sum + entry.transferSize, 0),
    loaded: performance.getEntriesByType('navigation')[0].loadEventEnd,
})"""


def environment(settings: Settings) -> dict[str, str]:
    """Every setting as the SOPHIA_* variable a process reads it from."""
    return {
        f"SOPHIA_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    """The processes of one dashboard stack, their settings, and a key of each scope."""

    settings: Settings
    secrets: dict[str, str]
    log_dir: Path
    processes: dict[str, SupervisedProcess] = field(default_factory=dict)
    search_word: str = ""
    """A word of the demo messages: the search finds it."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.settings.api_port}"

    def process(self, name: str) -> SupervisedProcess:
        settings = self.settings
        ready = {
            "api": f"{self.url}/readyz",
            "workers": str(settings.web_workers_metrics_url),
            "realtime": f"http://{HOST}:{settings.realtime_port}/healthz",
        }[name]
        if name == "workers":  # the models enrich what is written: the search and the trends need them
            settings = settings.model_copy(update={"ml_enabled": True})
        return SupervisedProcess(
            name,
            [sys.executable, "-m", PROCESSES[name]],
            lambda: answers(ready),
            self.log_dir / f"{name}.log",
            env=environment(settings),
        )

    async def start(self, *names: str) -> None:
        """Start `names` at once, each until it answers; a failed start raises."""
        starting = {name: self.process(name) for name in names}
        self.processes.update(starting)
        results = await asyncio.gather(
            *(process.start() for process in starting.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def stop(self, name: str) -> None:
        await self.processes.pop(name).stop(self.settings.shutdown_grace_s + 5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')}" for path in self.log_dir.iterdir()
        )

    @asynccontextmanager
    async def api(self, scope: str) -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {self.secrets[scope]}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10.0) as http:
            yield http

    async def put_deal(self, source_system: str, external_id: str, name: str, stage: str) -> str:
        """Write a deal through the REST API; its id."""
        data = {"dealname": name, "dealstage": stage, "amount": "64000.00", "hubspot_owner_id": "71023460"}
        async with self.api("write") as http:
            written = await http.put(
                f"/api/v1/records/{source_system}/deal/{external_id}", json={"data": data}
            )
        assert written.status_code in {200, 201}, written.text
        return str(written.json()["id"])


async def seed(stack: Stack) -> str:
    """Demo companies, deals, calls and messages through the bulk API, until the summaries, the
    trends and the search hold them all; returns a word the search finds."""
    lines = list(generate(DEMO_RECORDS, 42, now=datetime.now(UTC)))
    async with stack.api("write") as http:
        loaded = await http.post(
            "/api/v1/records:bulk",
            content=b"".join(to_ndjson(lines)),
            headers={"content-type": "application/x-ndjson"},
        )
    assert loaded.status_code == 200, loaded.text
    deals = [line["data"]["dealstage"] for line in lines if line["kind"] == "deal"]
    open_deals = sum(stage not in CLOSED_STAGES for stage in deals)
    conversations = sum(line["kind"] in {"call", "message"} for line in lines)
    first_message = next(line["data"]["text"] for line in lines if line["kind"] == "message")
    word: str = max(re.findall(r"[A-Za-z]{6,}", first_message), key=len).lower()

    async def settled() -> bool:
        async with stack.api("read") as http:
            stages = (await http.get("/api/v1/analytics/pipeline")).json()["stages"]
            weeks = (await http.get("/api/v1/analytics/sentiment")).json()["weeks"]
            found = (await http.post("/api/v1/search", json={"q": word})).json()["items"]
        pipeline = sum(stage["deals"] for stage in stages)
        trends = sum(sum(week["counts"].values()) for week in weeks)
        return pipeline == open_deals and trends == conversations and bool(found)

    await eventually(settled, timeout_s=60, poll_s=0.25)
    return word


@pytest.fixture(scope="module")
async def stack(settings: Settings, migrated_database, tmp_path_factory, request) -> AsyncIterator[Stack]:
    """The API, the workers and the real-time service on a database, a cache namespace and streams
    of their own, with demo data in them; their logs are printed if a test of the module failed."""
    api_port, realtime_port, workers_port = free_ports(3, HOST)
    name = f"web{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(
        update={
            "database_url": await migrated_database(),
            "cache_key_prefix": f"sophia:test:{name}:cache:",
            "events_stream_prefix": f"{name}-",
            "api_host": HOST,
            "api_port": api_port,
            "api_workers": 1,
            "realtime_host": HOST,
            "realtime_port": realtime_port,
            "realtime_ops_interval_s": 0.5,
            "workers_metrics_host": HOST,
            "workers_metrics_port": workers_port,
            "web_workers_metrics_url": f"http://{HOST}:{workers_port}/metrics",
            "web_realtime_metrics_url": f"http://{HOST}:{realtime_port}/metrics",
            "shutdown_grace_s": 2.0,
            "log_level": "INFO",
        }
    )
    async with Database(own) as database, database.connection() as connection:
        secrets = {scope: (await keys.create(connection, f"web-{scope}", scope))[1] for scope in keys.SCOPES}
    stack = Stack(own, secrets, tmp_path_factory.mktemp("stack-logs"))
    failed_before = request.session.testsfailed
    try:
        await stack.start(*PROCESSES)
        stack.search_word = await seed(stack)
        yield stack
    finally:
        for process in list(stack.processes):
            await stack.stop(process)
        if request.session.testsfailed > failed_before or sys.exc_info()[0] is not None:
            print(stack.logs())
        await delete_streams(str(own.nats_url), own.events_stream_prefix)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """A page in a browser context of its own, and the script errors it logged."""

    page: Page
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def new_tab(browser: Browser, **options: Any) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=VIEWPORT, **options)
    try:
        tab = Tab(await context.new_page())

        def logged(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.errors.append(f"console: {message.text}")

        tab.page.on("console", logged)
        tab.page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
        yield tab
    finally:
        await context.close()


async def submit_key(page: Page, secret: str) -> None:
    await page.fill("#key", secret)
    async with page.expect_navigation():
        await page.click("form[action='/sign-in'] button[type=submit]")


@asynccontextmanager
async def signed_in(browser: Browser, stack: Stack, scope: str) -> AsyncIterator[Tab]:
    """A new tab signed in through the form with the key of `scope`, on the business view."""
    async with new_tab(browser) as tab:
        await tab.page.goto(f"{stack.url}/sign-in")
        await submit_key(tab.page, stack.secrets[scope])
        yield tab


async def live(page: Page, *channels: str) -> None:
    """Until the page's WebSocket is open and subscribed to `channels`."""
    await page.wait_for_selector("#live-status[data-status=open]", timeout=RECONNECT_TIMEOUT_MS)
    await page.wait_for_function(SUBSCRIBED, arg=list(channels))


async def screenshot(page: Page, view: str, folder: Path) -> None:
    path = folder / f"dashboard-{view}.png"
    await page.screenshot(path=path, full_page=True)
    if os.environ.get(SCREENSHOTS_VARIABLE):
        target = Path(os.environ[SCREENSHOTS_VARIABLE])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)


async def shown_after(page: Page, condition: str, arg: object, started_s: float) -> float:
    """Milliseconds from `started_s` (monotonic) until `condition` holds on the page."""
    await page.wait_for_function(condition, arg=arg, timeout=SHOWN_TIMEOUT_MS)
    return (time.monotonic() - started_s) * 1000


async def report_weight(page: Page, responses: list[Response]) -> None:
    """Print what the page weighed (bodies as received, and as sent over the wire) and its paints."""
    bodies = {
        response.url: len(await response.body()) for response in responses if 200 <= response.status < 300
    }
    timing = await page.evaluate(PAGE_TIMING)
    first_paint, contentful = (
        timing["paints"].get(name, 0) for name in ("first-paint", "first-contentful-paint")
    )
    print(
        f"\nbusiness view: {len(bodies)} responses, {sum(bodies.values()) / 1024:.1f} KiB of bodies, "
        f"{timing['transferred'] / 1024:.1f} KiB transferred; first paint {first_paint:.0f} ms, "
        f"first contentful paint {contentful:.0f} ms, load {timing['loaded']:.0f} ms"
    )
    for url, size in sorted(bodies.items(), key=lambda body: -body[1]):
        print(f"  {size / 1024:8.1f} KiB  {url}")


async def test_sign_in_opens_the_business_view_and_leaves_nothing_for_scripts_to_read(
    browser, stack, tmp_path
):
    async with new_tab(browser) as tab:
        page = tab.page
        await page.goto(f"{stack.url}/")
        assert page.url == f"{stack.url}/sign-in?next=%2F"
        await screenshot(page, "sign-in", tmp_path)

        await submit_key(page, "sk_00000000_" + "A" * 43)
        assert "not valid" in await page.inner_text("#sign-in-error")
        assert [cookie for cookie in await page.context.cookies() if cookie["name"] == SESSION_COOKIE] == []
        assert [error for error in tab.errors if "401 (Unauthorized)" not in error] == []  # the form, 401
        tab.errors.clear()

        await submit_key(page, stack.secrets["read"])
        assert page.url == f"{stack.url}/"
        assert await page.get_attribute("body", "data-page") == "business"
        [session] = [cookie for cookie in await page.context.cookies() if cookie["name"] == SESSION_COOKIE]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"
        assert SESSION_COOKIE not in await page.evaluate("document.cookie")
        assert await page.evaluate("localStorage.length") == 0
        stored = await page.evaluate("Object.entries(sessionStorage)")
        assert dict(stored).keys() <= {"htmx-current-path-for-history"}  # htmx's: a path
        for secret in (stack.secrets["read"], session["value"]):
            assert secret not in await page.content()
            assert secret not in str(stored)
        assert tab.errors == []


async def test_each_view_renders_without_a_script_error_and_the_live_ones_go_live(browser, stack, tmp_path):
    async with signed_in(browser, stack, "read") as signed:
        session = await signed.page.context.storage_state()
    async with new_tab(browser, storage_state=session) as tab:  # signed in, nothing cached: a cold load
        responses: list[Response] = []
        tab.page.on("response", lambda response: responses.append(response))
        await tab.page.goto(f"{stack.url}/")
        await live(tab.page, "deals", "analytics")
        await tab.page.wait_for_function(CHARTS_DRAWN)
        await report_weight(tab.page, responses)
        await screenshot(tab.page, "business", tmp_path)

        async with tab.page.expect_navigation():
            await tab.page.click("#deals-table tbody tr:first-child a")
        assert await tab.page.get_attribute("body", "data-page") == "record"
        await tab.page.wait_for_selector("#record[data-id] #history")
        await tab.page.wait_for_selector("#live-status", state="detached")  # a record page does not listen
        await screenshot(tab.page, "record", tmp_path)
        assert tab.errors == []

    async with signed_in(browser, stack, "admin") as tab:
        await tab.page.goto(f"{stack.url}/ops")
        assert await tab.page.get_attribute("body", "data-page") == "ops"
        await live(tab.page, "ops")
        await tab.page.wait_for_selector("#ops-request-rate")
        assert tab.errors == []


async def test_a_deal_moved_through_the_rest_api_shows_on_the_open_business_page(browser, stack):
    source = f"crm{uuid.uuid4().hex[:8]}"  # the analytics of this source: this deal alone
    deal = await stack.put_deal(source, "d-moving", RENEWAL, "appointmentscheduled")
    async with signed_in(browser, stack, "read") as tab:
        await tab.page.goto(f"{stack.url}/?source_system={source}&sort=updated_at&order=desc")
        await live(tab.page, "deals", "analytics")
        await tab.page.wait_for_function(PIPELINE_SHOWN, arg="appointmentscheduled")
        await tab.page.wait_for_function(STAGE_SHOWN, arg=[deal, "appointmentscheduled"])

        await stack.put_deal(source, "d-moving", RENEWAL, "contractsent")
        written_s = time.monotonic()
        pipeline_ms, table_ms = await asyncio.gather(
            shown_after(tab.page, PIPELINE_SHOWN, "contractsent", written_s),
            shown_after(tab.page, STAGE_SHOWN, [deal, "contractsent"], written_s),
        )
        print(f"\nwrite -> page: pipeline {pipeline_ms:.0f} ms, active deals {table_ms:.0f} ms")
        await tab.page.wait_for_function(CHARTS_DRAWN)  # the panel swapped in draws its charts again
        assert await tab.page.query_selector('#pipeline tr[data-stage="appointmentscheduled"]') is None
        assert tab.errors == []


async def test_the_search_box_finds_records_and_marks_the_words_it_matched(browser, stack):
    async with signed_in(browser, stack, "read") as tab:
        await tab.page.fill("#search-q", stack.search_word)
        await tab.page.press("#search-q", "Enter")
        await tab.page.wait_for_selector("#search-hits li[data-id]")
        marked = await tab.page.eval_on_selector_all(
            "#search-results mark", "marks => marks.map((m) => m.textContent)"
        )
        assert marked
        assert {text.lower() for text in marked} == {stack.search_word}
        assert "lexical search" in await tab.page.inner_text("#search-results .search-mode")
        assert tab.errors == []


async def test_the_ops_view_shows_the_figures_and_refreshes_on_each_tick(browser, stack, tmp_path):
    async with signed_in(browser, stack, "admin") as tab:
        page = tab.page
        await page.goto(f"{stack.url}/ops")
        await live(page, "ops")
        for _ in range(2):  # each tick asks for the panel again
            before = await page.get_attribute("#ops-at", "datetime")
            await page.wait_for_function(
                "before => document.querySelector('#ops-at').dateTime !== before", arg=before
            )
        await page.wait_for_function("document.querySelector('#ops-request-rate').dataset.value !== ''")
        sources = await page.eval_on_selector_all(
            "#ops-sources li",
            "items => Object.fromEntries(items.map((li) => [li.dataset.source, li.dataset.status]))",
        )
        assert sources == {"api": "ok", "workers": "ok", "realtime": "ok", "database": "ok"}
        assert float(await page.get_attribute("#ops-connections", "data-value") or 0) >= 1
        assert int(await page.inner_text("#ws-connections-live")) >= 1
        assert await page.query_selector("#ops-consumer-lag tr[data-consumer]") is not None
        await screenshot(page, "ops", tmp_path)
        assert tab.errors == []


async def test_a_dropped_websocket_reconnects_and_catches_up_without_a_reload(browser, stack, tmp_path):
    async with signed_in(browser, stack, "read") as tab:
        page = tab.page
        await page.goto(f"{stack.url}/?sort=updated_at&order=desc")
        await live(page, "deals", "analytics")
        # Written once the page is live and shown by its event: a write before the page subscribed
        # could reach it late, and the refresh it asks for would show the offline write below.
        deal = await stack.put_deal("hubspot", "deal-web-offline", EXPANSION, "qualifiedtobuy")
        await page.wait_for_function(STAGE_SHOWN, arg=[deal, "qualifiedtobuy"], timeout=SHOWN_TIMEOUT_MS)
        await page.evaluate("window.sameDocument = true")

        await stack.stop("realtime")
        await page.wait_for_selector("#live-status[data-status=reconnecting]")
        await stack.put_deal("hubspot", "deal-web-offline", EXPANSION, "decisionmakerboughtin")
        await page.wait_for_function(CHARTS_DRAWN)
        await screenshot(page, "offline", tmp_path)
        assert await page.evaluate(STAGE_SHOWN, [deal, "qualifiedtobuy"])  # nothing says it moved yet

        await stack.start("realtime")  # on the same port
        await page.wait_for_selector("#live-status[data-status=open]", timeout=RECONNECT_TIMEOUT_MS)
        await page.wait_for_function(
            STAGE_SHOWN, arg=[deal, "decisionmakerboughtin"], timeout=SHOWN_TIMEOUT_MS
        )
        assert await page.evaluate("window.sameDocument") is True
        assert [error for error in tab.errors if "WebSocket" not in error] == []  # refused while away
