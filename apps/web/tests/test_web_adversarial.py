"""The dashboard against a hostile record author and a hostile visitor, over HTTP in-process on the
real API (PostgreSQL, Valkey, NATS from the root conftest): whatever a record, a label, an audit
entry or a query holds is shown as text, never markup; sign-in goes nowhere but this site; the
session cookie is HttpOnly, SameSite=Strict, Path=/ and Secure over HTTPS; sign-out, expiry and
forgery end or refuse a session cleanly; a cookie-authenticated write from another origin, or
beyond the key's scope, is refused; static files stay in their folder; bad input is a 4xx.

Found by it and fixed: another cookie of the host that Python's `SimpleCookie` refused hid the
session from `cookie_secret` (`test_another_cookie_of_the_host_does_not_hide_the_session`, 7 cases,
and in chromium, browser tier, `test_in_chromium_a_json_cookie_...`); and the REST API took an API
key sent as the session cookie, which the pages refuse (`test_an_api_key_in_the_session_cookie_...`)."""

from __future__ import annotations

import html
import itertools
import json
import re
import uuid
from datetime import UTC, datetime
from urllib.parse import quote
from uuid import UUID

import httpx
import pytest

from sophia.database import analytics, audit, enrichment, keys, sessions
from sophia.web.session import SESSION_COOKIE

EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>&amp;</pre></textarea>"
"""What a hostile author writes everywhere it can: it must come back escaped, never as markup."""
RAW_MARKUP = ("<script>alert(1)", "<img src=x", "onerror=alert(2)>", "</pre></textarea>")

_addresses = itertools.count(1)


def address() -> str:
    """A client address of each browser's own: failed keys are limited per address, and this
    module's forged cookies must not slow another test's sign-in."""
    number = next(_addresses)
    return f"198.51.{100 + number // 250}.{number % 250 + 1}"


def make_browser(app, base_url: str = "http://sophia.test") -> httpx.AsyncClient:
    """A cookie-keeping client with no key of its own, from an address of its own: a browser."""
    transport = httpx.ASGITransport(app=app, client=(address(), 40000))
    return httpx.AsyncClient(transport=transport, base_url=base_url, follow_redirects=False)


@pytest.fixture
async def browser(app):
    async with make_browser(app) as client:
        yield client


async def sign_in(
    browser: httpx.AsyncClient, secret: str, next_path: str = "/", **headers: str
) -> httpx.Response:
    return await browser.post(
        "/sign-in",
        content=str(httpx.QueryParams({"key": secret, "next": next_path})),
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )


async def stored(client: httpx.AsyncClient, source: str) -> list[dict]:
    """The records of `source`, read with the admin key."""
    listed = await client.get("/api/v1/records", params={"source_system": source})
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]


def assert_no_raw_markup(html: str) -> None:
    for raw in RAW_MARKUP:
        assert raw not in html, f"{raw!r} reached the page unescaped"


# ---- a hostile record author -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def hostile_deal(client, app) -> dict[str, str]:
    """A deal whose name, stage, owner, pipeline, external id and every other field are markup;
    with labels, a sentiment, stage history and audited changes that are markup too."""
    source = f"evil{uuid.uuid4().hex[:8]}"
    external_id = f"x{uuid.uuid4().hex[:6]}<img src=x onerror=alert(2)>\"'&amp;<b>"  # no "/": a path segment
    path = f"/api/v1/records/{source}/deal/{quote(external_id, safe='')}"
    data = {
        "dealname": f"zebracorn {EVIL}",
        "dealstage": f"stage1{EVIL}",
        "amount": "1000",
        "hubspot_owner_id": f"owner{EVIL}",
        "pipeline": f"pipe{EVIL}",
        "notes": f"zebracorn price {EVIL} " * 3,
        EVIL: EVIL,
    }
    first = await client.put(path, json={"data": data})
    assert first.status_code in {200, 201}, first.text
    record_id = UUID(first.json()["id"])
    database = app.state.sophia.database
    async with database.connection() as connection:
        await analytics.apply_deal_changes(connection, [record_id])
    second = await client.put(path, json={"data": {**data, "dealstage": f"stage2{EVIL}"}})
    assert second.status_code == 200, second.text
    async with database.connection() as connection:
        await analytics.apply_deal_changes(connection, [record_id])
        async with connection.transaction():
            await enrichment.write(
                connection,
                [
                    enrichment.Enrichment(
                        record_id,
                        2,
                        "zebracorn",
                        [0.0] * 384,
                        {
                            "sentiment": {"label": EVIL, "scores": {EVIL: 0.9}},
                            "classification": {"labels": [{"label": EVIL, "score": 0.8}, EVIL]},
                        },
                    )
                ],
                f"model{EVIL}",
                f"v{EVIL}",
                {"sentiment": f"s{EVIL}", "classification": f"c{EVIL}"},
            )
            await audit.append(
                connection,
                [
                    audit.AuditEntry(
                        uuid.uuid4(),
                        datetime.now(UTC),
                        f"actor{EVIL}",
                        f"action{EVIL}",
                        f"{source}/deal/{external_id}",
                        {"version": EVIL},
                    )
                ],
            )
    assert (await client.post("/api/v1/admin/views/active-deals:refresh")).status_code < 300
    return {"id": str(record_id), "source": source, "external_id": external_id}


async def test_a_hostile_records_page_shows_its_data_labels_and_history_as_text(
    browser, api_keys, hostile_deal
):
    await sign_in(browser, api_keys["read"])
    page = await browser.get(f"/records/{hostile_deal['id']}")
    assert page.status_code == 200, page.text
    assert_no_raw_markup(page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert 'class="chip"' in page.text  # the labels were rendered (escaped), not skipped
    assert "actor&lt;script&gt;" in page.text  # so was the audited change
    assert "stage2&lt;script&gt;" in page.text  # and the stage history
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_the_business_view_and_its_fragments_show_hostile_deals_as_text(
    browser, api_keys, hostile_deal
):
    await sign_in(browser, api_keys["read"])
    where = {"source_system": hostile_deal["source"]}
    for path in ("/", "/ui/deals", "/ui/analytics"):
        response = await browser.get(path, params=where)
        assert response.status_code == 200, (path, response.text)
        assert_no_raw_markup(response.text)
    business = await browser.get("/", params=where)
    assert f'href="/records/{hostile_deal["id"]}"' in business.text
    # a hostile visitor's filters come back in the form's values and the fragments' URLs, escaped
    filters = {"owner": EVIL, "pipeline": EVIL, "x": EVIL}
    echoed = await browser.get("/", params=filters)
    assert echoed.status_code == 200
    assert_no_raw_markup(echoed.text)
    raw_query = await browser.get(  # sent as is, not percent-encoded
        httpx.URL(
            "http://sophia.test",
            raw_path=b"/?owner=\"><script>alert(1)</script>&pipeline='><img src=x onerror=alert(2)>",
        )
    )
    assert raw_query.status_code == 200
    assert_no_raw_markup(raw_query.text)


async def test_search_results_and_their_highlights_are_escaped(browser, api_keys, hostile_deal):
    await sign_in(browser, api_keys["read"])
    for query in ("zebracorn price", f"zebracorn {EVIL}", "script img onerror alert", "lt gt amp quot mark"):
        found = await browser.get("/ui/search", params={"q": query}, headers={"hx-request": "true"})
        assert found.status_code == 200, found.text
        assert_no_raw_markup(found.text)
        marks = re.findall(r"<(/?)(\w+)", found.text)
        assert {tag for _, tag in marks} <= {"p", "ol", "li", "a", "span", "mark"}, marks
    hit = await browser.get("/ui/search", params={"q": "zebracorn"})
    assert f'data-id="{hostile_deal["id"]}"' in hit.text
    assert "<mark>zebracorn</mark>" in hit.text


# ---- sign-in, the cookie, sign-out --------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: x=1",
        " //evil.example",
        "%2F%2Fevil.example",
        "/" + "a" * 600,
    ],
)
async def test_sign_in_never_leaves_the_site(browser, api_keys, target):
    form = await browser.get("/sign-in", params={"next": target})
    assert form.status_code == 200
    assert_no_raw_markup(form.text)
    signed = await sign_in(browser, api_keys["read"], target)
    assert signed.status_code == 303
    location = signed.headers["location"]
    assert "\r" not in location
    assert "\n" not in location
    assert "\t" not in location
    assert "x=1" not in signed.headers.get_list("set-cookie")[0].split(";")[0]
    resolved = httpx.URL("http://sophia.test/sign-in").join(location)
    assert resolved.host == "sophia.test", location
    assert location.startswith("/"), location
    assert not location.startswith(("//", "/\\")), location


async def test_the_cookie_is_httponly_strict_site_wide_and_secure_over_https(app, api_keys):
    async with make_browser(app, "https://sophia.test") as secure:
        signed = await sign_in(secure, api_keys["read"])
        cookie = signed.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "secure", "path", "samesite", "max-age"} <= attributes, cookie
        assert "domain" not in attributes  # host-only: no sibling host receives it
        assert "path=/;" in cookie.lower() + ";"
        assert "samesite=strict" in cookie.lower()
        out = await secure.post("/sign-out")
        cleared = out.headers["set-cookie"].lower()
        assert "secure" in cleared
        assert "httponly" in cleared
        assert "samesite=strict" in cleared
    async with make_browser(app) as plain:
        cookie = (await sign_in(plain, api_keys["read"])).headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/" in cookie


async def test_every_sign_in_issues_a_new_secret_and_never_keeps_a_planted_one(browser, api_keys, database):
    """No session fixation: a cookie the visitor arrived with is never the one signed in."""
    async with database.connection() as connection:
        key, _ = await keys.create(connection, f"fix-{uuid.uuid4().hex[:6]}", "read")
        planted = await sessions.create(connection, key, ttl_s=60)
    browser.cookies.set(SESSION_COOKIE, planted)
    signed = await sign_in(browser, api_keys["read"])
    issued = signed.cookies[SESSION_COOKIE]
    assert issued != planted
    again = await sign_in(browser, api_keys["read"])
    assert again.cookies[SESSION_COOKIE] not in {issued, planted}
    assert sessions.SESSION_SHAPE.fullmatch(issued)
    async with database.connection() as connection:  # the database keeps a SHA-256, not the secret
        rows = await connection.fetch("SELECT secret_hash::text AS kept FROM sophia_core.web_sessions")
        assert keys.digest(issued).hex() in {row["kept"].removeprefix("\\x") for row in rows}
        assert not [row for row in rows if issued in row["kept"]]


async def test_sign_out_ends_the_session_for_pages_the_api_and_the_realtime_token(browser, api_keys, app):
    signed = await sign_in(browser, api_keys["write"])
    secret = signed.cookies[SESSION_COOKIE]
    assert (await browser.get("/api/v1/analytics/pipeline")).status_code == 200  # remembered now
    assert (await browser.post("/api/v1/realtime/token")).status_code == 200
    out = await browser.post("/sign-out")
    assert out.status_code == 303
    assert out.headers["location"] == "/sign-in"
    browser.cookies.clear()
    browser.cookies.set(SESSION_COOKIE, secret)  # the old cookie, replayed
    assert (await browser.get("/")).status_code == 303
    assert (await browser.get("/api/v1/analytics/pipeline")).status_code == 401
    assert (await browser.post("/api/v1/realtime/token")).status_code == 401
    browser.cookies.clear()
    bearer = await browser.get("/api/v1/analytics/pipeline", headers={"authorization": f"Bearer {secret}"})
    assert bearer.status_code == 401  # nor as a bearer token
    browser.cookies.set(SESSION_COOKIE, secret)
    fragment = await browser.get("/ui/deals", headers={"hx-request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"] == "/sign-in"


async def test_sign_out_from_another_site_ends_nothing(browser, api_keys):
    await sign_in(browser, api_keys["read"])
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}, {"origin": "null"}):
        forged = await browser.post("/sign-out", headers=headers)
        assert forged.status_code == 303
        assert "set-cookie" not in forged.headers
        assert (await browser.get("/")).status_code == 200, headers


async def test_an_expired_session_is_refused_and_its_cookie_cleared(browser, database):
    async with database.connection() as connection:
        key, _ = await keys.create(connection, f"exp-{uuid.uuid4().hex[:6]}", "write")
        expired = await sessions.create(connection, key, ttl_s=0.000001)
    browser.cookies.set(SESSION_COOKIE, expired)
    page = await browser.get("/records/" + str(uuid.uuid4()))
    assert page.status_code == 303
    assert page.headers["location"].startswith("/sign-in?next=")
    assert "max-age=0" in page.headers["set-cookie"].lower()
    browser.cookies.set(SESSION_COOKIE, expired)
    api = await browser.get("/api/v1/analytics/pipeline")
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")
    write = await browser.put("/api/v1/records/web/deal/expired", json={"data": {}})
    assert write.status_code == 401


@pytest.mark.parametrize(
    "cookie",
    [
        "ss_" + "A" * 43,  # the right shape, never issued
        "ss_" + "A" * 42,
        "ss_" + "A" * 44,
        "ss_" + "A" * 42 + "=",
        '"ss_' + "A" * 43 + '"',
        '"\\777"',
        '"\\',
        "ss_" + "A" * 8000,
        "ss_%00" + "A" * 40,
        "sk_00000000_" + "A" * 43,
        "<script>alert(1)</script>",
        "\x7f\x01",
    ],
)
async def test_a_forged_or_malformed_cookie_is_refused_cleanly(app, cookie):
    async with make_browser(app) as browser:
        header = {"cookie": f"{SESSION_COOKIE}={cookie}".encode("latin-1")}
        page = await browser.get("/", headers=header)
        assert page.status_code == 303, page.text
        assert page.headers["location"].startswith("/sign-in")
        fragment = await browser.get("/ui/search?q=x", headers={**header, "hx-request": "true"})
        assert fragment.status_code == 401
        api = await browser.get("/api/v1/analytics/pipeline", headers=header)
        assert api.status_code == 401, api.text
        write = await browser.post("/api/v1/realtime/token", headers=header)
        assert write.status_code == 401, write.text


async def test_a_tampered_cookie_is_refused(browser, api_keys):
    signed = await sign_in(browser, api_keys["admin"])
    secret = signed.cookies[SESSION_COOKIE]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    browser.cookies.clear()
    browser.cookies.set(SESSION_COOKIE, flipped)
    assert (await browser.get("/ops")).status_code == 303
    assert (await browser.get("/api/v1/analytics/pipeline")).status_code == 401


@pytest.mark.parametrize("first", [True, False], ids=["other-first", "session-first"])
@pytest.mark.parametrize(
    "other",
    [
        'prefs={"theme":"dark"}',  # JSON, as many apps keep it
        "greeting=hello world",  # a space
        "seen",  # a nameless cookie (`document.cookie = "seen"`)
        "dir=C:\\Users",  # a backslash
        "lang=fran\xc3\xa7ais",  # UTF-8 (the header is read as latin-1)
        "plain=abc",
    ],
    ids=["json", "space", "nameless", "backslash", "utf8", "plain"],
)
async def test_another_cookie_of_the_host_does_not_hide_the_session(app, api_keys, other, first):
    """Browsers send every cookie of the host (of any port: cookies do not isolate by port) in one
    header, the older first, with values Python's `SimpleCookie` refuses: the session must still be
    found in it. `cookie_secret` (sophia/web/session.py) lost the session when `SimpleCookie` met
    such a cookie (before it, or for some values anywhere), so a signed-in user was sent back to
    the sign-in form after every sign-in, and the API answered 401."""
    async with make_browser(app) as browser:
        secret = (await sign_in(browser, api_keys["read"])).cookies[SESSION_COOKIE]
        browser.cookies.clear()
        session = f"{SESSION_COOKIE}={secret}"
        cookie = {"cookie": (f"{other}; {session}" if first else f"{session}; {other}").encode("latin-1")}
        page = await browser.get("/", headers=cookie)
        assert page.status_code == 200, (cookie, page.status_code, page.headers.get("location"))
        api = await browser.get("/api/v1/analytics/pipeline", headers=cookie)
        assert api.status_code == 200, (cookie, api.text)


# ---- CSRF and scope -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://evil.example"},
        {"origin": "http://sophia.test.evil.example"},
        {"origin": "http://sophia.test:8443"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"sec-fetch-site": "same-origin", "origin": "https://evil.example"},
    ],
)
async def test_a_cookie_authenticated_write_from_another_origin_is_refused(
    browser, api_keys, client, headers
):
    await sign_in(browser, api_keys["admin"])
    source = f"csrf{uuid.uuid4().hex[:8]}"
    path = f"/api/v1/records/{source}/deal/d-1"
    forged = await browser.put(path, json={"data": {"dealname": "forged"}}, headers=headers)
    assert forged.status_code == 403, forged.text
    assert await stored(client, source) == []  # nothing was written
    assert (await browser.post("/api/v1/realtime/token", headers=headers)).status_code == 403
    deleted = await browser.delete(path, headers=headers)
    assert deleted.status_code == 403
    own = await browser.put(
        path,
        json={"data": {"dealname": "mine"}},
        headers={"origin": "http://sophia.test", "sec-fetch-site": "same-origin"},
    )
    assert own.status_code in {200, 201}, own.text


async def test_sign_in_from_another_site_is_refused(browser, api_keys):
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
        forged = await sign_in(browser, api_keys["admin"], **headers)
        assert forged.status_code == 403
        assert "set-cookie" not in forged.headers


async def test_a_read_key_cannot_write_through_its_session(browser, api_keys, client):
    await sign_in(browser, api_keys["read"])
    same_origin = {"origin": "http://sophia.test", "sec-fetch-site": "same-origin"}
    source = f"scope{uuid.uuid4().hex[:8]}"
    path = f"/api/v1/records/{source}/deal/d-1"
    written = await browser.put(path, json={"data": {"dealname": "x"}}, headers=same_origin)
    assert written.status_code == 403, written.text
    assert await stored(client, source) == []
    refresh = await browser.post("/api/v1/admin/views/active-deals:refresh", headers=same_origin)
    assert refresh.status_code == 403
    assert (await browser.get("/ops")).status_code == 403
    assert (await browser.get("/ui/ops", headers={"hx-request": "true"})).status_code == 403
    await sign_in(browser, api_keys["write"])
    assert (await browser.get("/ops")).status_code == 403
    assert (
        await browser.post("/api/v1/admin/views/active-deals:refresh", headers=same_origin)
    ).status_code == 403


# ---- static files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/../web/pages.py",
        b"/static/..%2fpages.py",
        b"/static/%2e%2e/templates/base.html",
        b"/static/%2e%2e%2f%2e%2e%2f__init__.py",
        b"/static/vendor/../../pages.py",
        b"/static/..%5cpages.py",
        b"/static//etc/passwd",
        b"/static/%2fetc%2fpasswd",
        b"/static/dashboard.js%00.png",
        b"/static/%ED%A0%80",
        b"/static/" + b"a" * 5000,
        b"/static/vendor/",
    ],
)
async def test_static_files_cannot_be_used_to_leave_their_folder(browser, raw_path):
    response = await browser.get(httpx.URL("http://sophia.test", raw_path=raw_path))
    assert response.status_code in {404, 405}, (raw_path, response.status_code)
    assert "from __future__" not in response.text
    assert "root:" not in response.text
    assert (await browser.get("/static/dashboard.js")).status_code == 200


# ---- bad input is a 4xx -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ui/search?q=%00",
        "/ui/search?q=a%00b",
        "/ui/search?q=%ED%A0%80",
        "/ui/search?q=%ED%B2%80%ED%A0%80x",
        "/ui/search?q=%5Cud800",
        "/ui/search?q=%FF%FE",
        "/ui/search?q=" + "a" * 1001,
        "/ui/search?q=" + "%E2%80%AE" * 300,
        "/ui/search?k=0",
        "/ui/search?k=%00",
        "/ui/search?q=x&k=99999999999999999999999999",
        "/?owner=%00",
        "/?pipeline=%ED%A0%80%00",
        "/?owner=" + "a" * 201,
        "/?from=%00",
        "/?from=%ED%A0%80",
        "/?from=99999-01-01",
        "/?from=2026-02-30",
        "/?page=%00",
        "/?page=1e3",
        "/?page=99999999999999999999999",
        "/?sort=%00",
        "/?source_system=%ED%A0%80",
        "/ui/deals?owner=%00",
        "/ui/analytics?owner=%00&to=%00",
        "/records/%00",
        "/records/%ED%A0%80",
        "/records/" + "a" * 5000,
        "/records/00000000-0000-0000-0000-000000000000%00",
        "/sign-in?next=%00",
        "/sign-in?next=%ED%A0%80",
        "/sign-in?next=/%ED%A0%80%00",
        "/?" + "&".join(f"p{n}=1" for n in range(2000)),
        "/?%00=%00",
        "/?%ED%A0%80=1",
        "/?a=%",
        "/?a=%zz&b=%E0%A4",
        "/ui/search?q=%",
    ],
)
async def test_bad_input_is_a_4xx_never_a_500(browser, api_keys, path):
    await sign_in(browser, api_keys["admin"])
    response = await browser.get(path)
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    assert "Internal error" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        b"key=%ED%A0%80",
        b"key=%00",
        b"key=\\ud800",
        b"key=sk_%00&next=/%ED%A0%80",
        b"key=x&next=%ED%A0%80",
        b"key=" + b"A" * 4000,
        b"key=" + b"A" * 5000,
        b"\xed\xa0\x80",
        b"key=\xff",
        b"&&&&&&&&&&",
        b"a=1&b=2&c=3&d=4&e=5&key=x",
        b"key",
        b"%",
        b"",
        b'{"key": "\\ud800"}',
    ],
)
async def test_a_bad_sign_in_form_is_a_4xx_never_a_500(app, body):
    async with make_browser(app) as browser:
        response = await browser.post(
            "/sign-in", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text[:300])
        assert "set-cookie" not in response.headers


async def test_a_cookie_authenticated_write_with_a_lone_surrogate_is_a_4xx(browser, api_keys):
    await sign_in(browser, api_keys["write"])
    path = f"/api/v1/records/sur{uuid.uuid4().hex[:8]}/deal/d-1"
    for body in (
        b'{"data": {"dealname": "\\ud800"}}',
        b'{"data": {"\\udc00": 1}}',
        b'{"data": {"a": "\\u0000"}}',
    ):
        response = await browser.put(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)


async def test_the_trend_charts_json_carries_hostile_labels_without_ending_its_attribute(
    browser, api_keys, client, app
):
    """Sentiment and topic labels (the models' words, stored as they came) reach the charts as
    JSON in the chart's `data-weeks` attribute: no label can close that attribute early."""
    source = f"evil{uuid.uuid4().hex[:8]}"
    written = await client.put(f"/api/v1/records/{source}/message/m-1", json={"data": {"text": EVIL}})
    assert written.status_code in {200, 201}, written.text
    record_id = UUID(written.json()["id"])
    label = EVIL + "</SCRIPT ><!--<script>\u2028\u2029"
    async with app.state.sophia.database.connection() as connection:
        async with connection.transaction():
            await enrichment.write(
                connection,
                [
                    enrichment.Enrichment(
                        record_id,
                        1,
                        "x",
                        [0.0] * 384,
                        {"sentiment": {"label": label, "scores": {}}, "classification": {"labels": [label]}},
                    )
                ],
                "m",
                "v",
                {"sentiment": "s", "classification": "c"},
            )
        await analytics.apply_conversation_changes(connection, [record_id])
    await sign_in(browser, api_keys["read"])
    fragment = await browser.get("/ui/analytics", params={"source_system": source})
    assert fragment.status_code == 200, fragment.text
    boxes = re.findall(r'<div class="chart" data-chart="(\w+)" data-weeks="([^"]*)"></div>', fragment.text)
    charts = {name: json.loads(html.unescape(text)) for name, text in boxes}
    assert set(charts) == {"sentiment", "topics"}, fragment.text
    assert [list(week["counts"]) for week in charts["topics"]] == [[label]]
    assert [list(week["counts"]) for week in charts["sentiment"]] == [[label]]
    for _, text in boxes:  # the label's quotes and brackets escaped: the attribute ends where it should
        assert not set(text) & set("<>'")
    assert_no_raw_markup(fragment.text)


# ---- in a real browser --------------------------------------------------------------------------


async def _serve(app, port: int):
    """`app` (already started) on loopback by uvicorn, until told to exit."""
    import asyncio

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task


async def _other_app(scope, receive, send) -> None:
    """Another web app on the same host (another port): it keeps a preference in a JSON cookie."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/html"), (b"set-cookie", b'prefs={"theme":"dark"}; Path=/')]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"<p>another app</p>"})


async def test_an_api_key_in_the_session_cookie_is_no_session_for_pages_or_the_api(app, api_keys):
    """A session cookie holds a session's secret (`ss_...`), never an API key: the pages refused a
    key sent so, the REST API's key gate took it. Both refuse it now."""
    async with make_browser(app) as browser:
        cookie = {"cookie": f"{SESSION_COOKIE}={api_keys['read']}".encode()}
        page = await browser.get("/", headers=cookie)
        api = await browser.get("/api/v1/analytics/pipeline", headers=cookie)
    assert page.status_code == 303
    assert api.status_code == 401


@pytest.mark.browser
async def test_in_chromium_a_json_cookie_of_another_app_on_the_host_keeps_the_dashboard_signed_out(
    app, api_keys
):
    """The browser's side of test_another_cookie_of_the_host_does_not_hide_the_session: a user who
    opened another web app of the same host (any port) before signing in holds its cookie, which
    chromium sends before the session's (older cookies first); not finding its session in that
    header, the dashboard answered a successful sign-in by sending the user back to sign in."""
    from browsers import chromium
    from playwright.async_api import async_playwright

    from sophia.engines.process import free_ports

    dashboard_port, other_port = free_ports(2)
    dashboard, dashboard_task = await _serve(app, dashboard_port)
    other, other_task = await _serve(_other_app, other_port)
    try:
        async with async_playwright() as playwright:
            launched = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                context = await launched.new_context()
                page = await context.new_page()
                base = f"http://127.0.0.1:{dashboard_port}"
                await page.goto(f"http://127.0.0.1:{other_port}/")  # the other app, opened first
                await page.goto(f"{base}/sign-in")
                await page.fill("#key", api_keys["read"])
                async with page.expect_navigation():
                    await page.click("form[action='/sign-in'] button[type=submit]")
                names = {cookie["name"] for cookie in await context.cookies(base)}
                assert {SESSION_COOKIE, "prefs"} <= names  # signed in; both cookies are the host's
                assert page.url == f"{base}/", f"signed in, yet sent to {page.url}"
                assert await page.locator("#deals-table").count() == 1
            finally:
                await launched.close()
    finally:
        for server, task in ((dashboard, dashboard_task), (other, other_task)):
            server.should_exit = True
            await task
