"""The dashboard over HTTP, in-process: sign-in exchanges a key for an HttpOnly, SameSite=Strict
session cookie; the cookie opens the pages and the REST API (not from another site); sign-out,
expiry and revocation end it; each page renders what the database holds; bad input is a 4xx."""

from __future__ import annotations

import uuid
from uuid import UUID

import httpx
import pytest

from sophia.database import analytics, keys, sessions
from sophia.web.pages import _number, highlight
from sophia.web.session import SESSION_COOKIE


@pytest.fixture
async def browser(app) -> httpx.AsyncClient:
    """A cookie-keeping client with no key of its own: what a browser is."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sophia.test", follow_redirects=False
    ) as client:
        yield client


async def sign_in(browser: httpx.AsyncClient, secret: str, next_path: str = "/") -> httpx.Response:
    return await browser.post(
        "/sign-in",
        content=httpx.QueryParams({"key": secret, "next": next_path}).__str__(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )


async def test_sign_in_sets_a_session_cookie_that_scripts_cannot_read(browser, api_keys):
    form = await browser.get("/sign-in")
    assert form.status_code == 200
    assert 'name="key"' in form.text
    assert "script-src 'self'" in form.headers["content-security-policy"]

    signed = await sign_in(browser, api_keys["read"], "/records/x")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/records/x"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=ss_")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert api_keys["read"] not in cookie  # the key itself never goes to the browser


async def test_a_wrong_key_is_refused_with_a_message_and_no_cookie(browser):
    refused = await sign_in(browser, "sk_00000000_" + "A" * 43)
    assert refused.status_code == 401
    assert "not valid" in refused.text
    assert "set-cookie" not in refused.headers
    empty = await sign_in(browser, "")
    assert empty.status_code == 400
    assert "Enter an API key" in empty.text


async def test_sign_in_refuses_other_sites_and_leaves_the_site_only_for_its_own_paths(browser, api_keys):
    forged = await browser.post(
        "/sign-in",
        content=f"key={api_keys['read']}",
        headers={"origin": "https://evil.example", "content-type": "application/x-www-form-urlencoded"},
    )
    assert forged.status_code == 403
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        signed = await sign_in(browser, api_keys["read"], target)
        assert signed.headers["location"] == "/"


async def test_an_oversize_or_garbled_form_is_a_4xx(browser):
    big = await browser.post(
        "/sign-in", content="key=" + "a" * 5000, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert big.status_code == 413
    garbled = await browser.post(
        "/sign-in", content=b"key=\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert garbled.status_code == 400


async def test_without_a_session_pages_send_to_sign_in_and_fragments_say_401(browser):
    page = await browser.get("/?owner=ann")
    assert page.status_code == 303
    assert page.headers["location"] == "/sign-in?next=%2F%3Fowner%3Dann"
    fragment = await browser.get("/ui/deals", headers={"hx-request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"] == "/sign-in"
    browser.cookies.set(SESSION_COOKIE, "ss_" + "x" * 43)
    made_up = await browser.get("/")
    assert made_up.status_code == 303


async def test_the_cookie_opens_the_rest_api_but_not_for_writes_from_another_site(browser, api_keys):
    await sign_in(browser, api_keys["write"])
    read = await browser.get("/api/v1/analytics/pipeline")
    assert read.status_code == 200, read.text
    token = await browser.post("/api/v1/realtime/token")
    assert token.status_code == 200
    assert token.json()["scope"] == "write"
    forged = await browser.post(
        "/api/v1/realtime/token", headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
    )
    assert forged.status_code == 403
    assert "own pages" in forged.json()["detail"]


async def test_sign_out_ends_the_session_everywhere_it_was_used(browser, api_keys, database):
    signed = await sign_in(browser, api_keys["read"])
    secret = signed.cookies[SESSION_COOKIE]
    assert (await browser.get("/")).status_code == 200
    out = await browser.post("/sign-out")
    assert out.status_code == 303
    assert 'sophia_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    async with database.connection() as connection:
        assert await sessions.find_active(connection, secret) is None
    browser.cookies.set(SESSION_COOKIE, secret)
    replayed = await browser.get("/")
    assert replayed.status_code == 303


async def test_an_expired_session_or_a_revoked_key_ends_it(browser, database, app):
    async with database.connection() as connection:
        key, _ = await keys.create(connection, f"web-{uuid.uuid4().hex[:6]}", "read")
        expired = await sessions.create(connection, key, ttl_s=0.000001)
        live = await sessions.create(connection, key, ttl_s=60)
    browser.cookies.set(SESSION_COOKIE, expired)
    assert (await browser.get("/")).status_code == 303
    browser.cookies.set(SESSION_COOKIE, live)
    assert (await browser.get("/")).status_code == 200
    async with database.connection() as connection:
        assert await keys.revoke(connection, key.prefix)
    app.state.sophia.keys.forget(live)  # what the key cache's TTL does in this process, at once
    refused = await browser.get("/api/v1/analytics/pipeline")
    assert refused.status_code == 401
    assert "sign in again" in refused.json()["detail"]


async def test_the_ops_view_needs_an_admin_key(browser, api_keys):
    await sign_in(browser, api_keys["read"])
    page = await browser.get("/")
    assert 'href="/ops"' not in page.text  # the nav shows what the key may open
    refused = await browser.get("/ops")
    assert refused.status_code == 403
    assert "admin" in refused.text
    await sign_in(browser, api_keys["admin"])
    assert 'href="/ops"' in (await browser.get("/")).text
    ops = await browser.get("/ops")
    assert ops.status_code == 200, ops.text


async def test_the_business_view_shows_the_summaries_and_the_active_deals(browser, client, app, api_keys):
    source = f"web{uuid.uuid4().hex[:10]}"
    ids = []
    for number, (stage, amount) in enumerate([("qualifiedtobuy", "100"), ("contractsent", "2500")]):
        written = await client.put(
            f"/api/v1/records/{source}/deal/d-{number}",
            json={"data": {"dealname": f"<b>Deal {number}</b>", "dealstage": stage, "amount": amount}},
        )
        assert written.status_code in {200, 201}, written.text
        ids.append(UUID(written.json()["id"]))
    async with app.state.sophia.database.connection() as connection:
        await analytics.apply_deal_changes(connection, ids)
    assert (await client.post("/api/v1/admin/views/active-deals:refresh")).status_code < 300

    await sign_in(browser, api_keys["read"])
    page = await browser.get("/", params={"source_system": source, "sort": "amount", "order": "desc"})
    assert page.status_code == 200
    assert 'data-stage="contractsent"' in page.text
    assert "&lt;b&gt;Deal 1&lt;/b&gt;" in page.text  # record data is escaped, never markup
    assert "<b>Deal 1</b>" not in page.text
    fragment = await browser.get("/ui/analytics", params={"source_system": source})
    assert fragment.status_code == 200
    assert 'data-stage="qualifiedtobuy"' in fragment.text
    deals = await browser.get("/ui/deals", params={"sort": "name", "order": "asc"})
    assert deals.status_code == 200
    assert 'aria-sort="ascending"' in deals.text


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/ui/deals?sort=secret_hash", "sort"),
        ("/ui/deals?page=-1", "page"),
        ("/ui/deals?order=sideways", "order"),
        ("/?from=2026-03-01&to=2026-01-01", "to"),
        ("/ui/analytics?source_system=a%20b", "source_system"),
        ("/records/not-a-uuid", "record_id"),
    ],
)
async def test_bad_page_input_is_a_4xx_naming_where(browser, api_keys, path, where):
    await sign_in(browser, api_keys["read"])
    response = await browser.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert where in response.text


async def test_a_record_page_shows_its_data_and_history_and_an_unknown_one_is_404(browser, client, api_keys):
    source = f"web{uuid.uuid4().hex[:10]}"
    written = await client.put(f"/api/v1/records/{source}/message/m-1", json={"data": {"text": "hello"}})
    record_id = written.json()["id"]
    await sign_in(browser, api_keys["read"])
    page = await browser.get(f"/records/{record_id}")
    assert page.status_code == 200
    assert f'data-id="{record_id}"' in page.text
    assert "hello" in page.text
    missing = await browser.get(f"/records/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"]


def test_highlight_marks_the_query_words_and_escapes_everything_else():
    marked = highlight("The <script>price</script> is too high; PRICE matters", "price high")
    assert str(marked).count("<mark>") == 3
    assert "&lt;script&gt;" in marked
    assert "<script>" not in marked
    long = highlight("x" * 500 + " price " + "y" * 500, "price", width=100)
    assert str(long).startswith("…")
    assert str(long).endswith("…")
    assert "<mark>price</mark>" in long


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "—"), ("64000.00", "64.0 k"), ("12.5", "12.50"), ("n/a", "n/a"), ("NaN", "NaN"), (3, "3")],
)
def test_numbers_from_the_catalog_are_formatted_and_text_is_left_alone(value, shown):
    assert _number(value) == shown
