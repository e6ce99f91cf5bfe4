"""Adversarial inputs for the API's collection routes (not the single-record ones): the records
list's query semantics, bulk NDJSON, events, analytics, search and the deals page.

The rule each case holds a route to: any input gets a correct 2xx or a 4xx problem+json that names
the field and where it is; never a 500, a hang, a record silently dropped, or a parameter whose
meaning depends on the order it was repeated in. What this module found is fixed, each a test
saying what happened before (numeric `data.` filters matching a double's neighbour, PostgreSQL's
refusals of NUL or out-of-range times answered naming no field, unknown and repeated query
parameters, naive timestamps read in the server's time zone, one event id twice in a batch, too
many data filters tripping the breaker, a stalled events body never answered), but one, marked
with its reason; the others pin edges found to hold.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from app_clients import app_client, http_scope, started_app
from problem_assertions import assert_problem
from streams import stream_documents

from sophia.core.events import uuid7
from sophia.database import events as stored_events
from sophia.events.codec import unpack
from sophia.workers.sinks import store_events

pytestmark = pytest.mark.load  # hundreds of edge cases: the fast tier keeps the 30 s it has

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


def source() -> str:
    return f"adv{uuid.uuid4().hex[:10]}"


def names(problem: dict[str, Any], where: list[Any]) -> bool:
    """Whether a problem's `errors` locate one of them at `where` (or inside it)."""
    return any(error["location"][: len(where)] == where for error in problem.get("errors", []))


# --- GET /api/v1/records: data.<key>= filters on numbers ----------------------------------------


@pytest.mark.parametrize(
    ("stored", "asked", "found"),
    [
        ("12000", "12000", True),  # the documented case: the number the text spells
        ("12000", "12000.0", True),
        ("123456789012345678901234567890", "123456789012345678901234567890", True),
        ("123456789012345680000000000000", "123456789012345678901234567890", False),
        ("9007199254740992", "9007199254740993.0", False),
        ("0", "1e-400", False),
    ],
    ids=["int", "int-as-float", "big-int-exact", "big-int-neighbour", "2^53+1", "underflow"],
)
async def test_a_numeric_data_filter_matches_exactly_the_number_it_spells(client, stored, asked, found):
    """Found here, fixed (big-int-exact, big-int-neighbour, 2^53+1, underflow). The catalog stores numbers
    exactly (jsonb numeric; a PUT of a 30-digit integer reads back whole), but the filter turns the
    text into a double (`catalog._json_scalar`, orjson) before asking `data @> {"n": <double>}`:
    the exact 30-digit number is not found, a different record whose number is that double's
    rounding is found instead, 9007199254740993.0 finds 9007199254740992 and 1e-400 finds 0."""
    system = source()
    body = b'{"data": {"n": %s}}' % stored.encode()
    written = await client.put(f"/api/v1/records/{system}/note/n", content=body, headers=JSON)
    assert written.status_code == 201, written.text
    listed = await client.get("/api/v1/records", params={"source_system": system, "data.n": asked})
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == (1 if found else 0), listed.text


# --- Values PostgreSQL refuses: a 4xx that names the field, not the engine's exception ----------


BAD_VALUES = [
    ("GET", "/api/v1/analytics/pipeline", {"owner": "a\x00b"}, ["query", "owner"]),
    ("GET", "/api/v1/analytics/funnel", {"pipeline": "a\x00b"}, ["query", "pipeline"]),
    ("GET", "/api/v1/analytics/companies", {"company": "a\x00b"}, ["query", "company"]),
    ("GET", "/api/v1/records", {"updated_since": "0001-01-01T00:00:00+14:00"}, ["query", "updated_since"]),
    ("POST", "/api/v1/search", {"q": "a\x00b"}, ["body", "q"]),
    ("POST", "/api/v1/search", {"q": "x", "filters": {"data": {"a\x00": "x"}}}, ["body", "filters", "data"]),
    ("POST", "/api/v1/search", {"q": "x", "filters": {"data": {"a": "x\x00"}}}, ["body", "filters", "data"]),
    (
        "POST",
        "/api/v1/search",
        {"q": "x", "filters": {"updated_since": "0001-01-01T00:00:00+14:00"}},
        ["body", "filters", "updated_since"],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "given", "where"),
    BAD_VALUES,
    ids=[
        "analytics-owner-nul",
        "analytics-pipeline-nul",
        "analytics-company-nul",
        "list-updated-since-before-utc-year-1",
        "search-q-nul",
        "search-data-key-nul",
        "search-data-value-nul",
        "search-updated-since-before-utc-year-1",
    ],
)
async def test_a_value_postgres_refuses_is_a_4xx_naming_the_field(client, method, path, given, where):
    """Found here, fixed (every case). These reach PostgreSQL unchecked and come back from the pool's last
    line of defence (`pool.Database.connection`) as 422 "PostgreSQL refused a value:
    CharacterNotInRepertoireError." / "UntranslatableCharacterError." / "DataError." with no
    `errors` member and no field named. The records list checks its own data filters for NUL
    (a 400 naming the parameter: test_errors.py); these inputs get no such check."""
    if method == "GET":
        response = await client.get(path, params=given)
    else:
        response = await client.post(path, json=given)
    problem = assert_problem(response, response.status_code)
    assert response.status_code in {400, 422}, response.text
    assert names(problem, where), problem


# --- Unknown and repeated query parameters ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/records",
        "/api/v1/analytics/pipeline",
        "/api/v1/analytics/sentiment",
        "/api/v1/analytics/companies",
        "/api/v1/deals/active",
    ],
)
async def test_an_unknown_query_parameter_is_refused_naming_it_on_every_list(client, path):
    """Found here, fixed (every path but /api/v1/records). The records list refuses a parameter it does not
    know (400 naming it); the analytics and deals routes ignore it and answer 200, so a typo such
    as `form=` for `from=` silently returns the unfiltered aggregate."""
    response = await client.get(path, params={"form": "2026-01-01"})
    problem = assert_problem(response, 400)
    assert names(problem, ["query", "form"]), problem


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        ("/api/v1/records", [("limit", "0"), ("limit", "1")], [("limit", "1"), ("limit", "0")]),
        (
            "/api/v1/analytics/pipeline",
            [("from", "2026-03-01"), ("to", "2026-01-01"), ("to", "2026-06-01")],
            [("from", "2026-03-01"), ("to", "2026-06-01"), ("to", "2026-01-01")],
        ),
    ],
    ids=["records-limit", "analytics-to"],
)
async def test_a_repeated_parameter_means_the_same_in_any_order(client, path, first, second):
    """Found here, fixed. A repeated single-valued parameter silently takes its last value (FastAPI's
    scalar Query), so whether the request is valid depends on the order: `limit=0&limit=1` is a
    200 and `limit=1&limit=0` a 422; `to` before `from` is a 422 or a 200 by order. (Repeated
    `data.<key>=` filters are instead all applied, ANDed: two rules in one route.)"""
    one = await client.get(path, params=first)
    other = await client.get(path, params=second)
    assert one.status_code == other.status_code, (one.text, other.text)


async def test_the_search_filters_take_the_same_timestamps_as_the_records_list(client):
    """Found here, fixed. Search takes "the records list's filters" (README), but a timestamp without an
    offset is a 200 on the list (asyncpg then reads it in the API process's local time zone:
    `naive.astimezone(utc)`) and a 422 on search (`AwareDatetime`)."""
    naive = "2026-01-01T00:00:00"
    listed = await client.get("/api/v1/records", params={"updated_since": naive, "limit": 1})
    searched = await client.post("/api/v1/search", json={"q": "x", "filters": {"updated_since": naive}})
    assert listed.status_code == searched.status_code, (listed.text, searched.text)


# --- POST /api/v1/records:bulk ------------------------------------------------------------------


async def test_a_record_bulk_accepts_can_be_deleted_by_its_key(client):
    """Found here, fixed. Bulk accepts any external_id but NUL, "a/b" included, but no
    single-record route could name it: the path's %2F is decoded before routing, so DELETE (and
    PUT) of /api/v1/records/<s>/note/a%2Fb was a 404 of the router, and the record could never be
    deleted or replaced on its own. The routes take the rest of the path as the external id now."""
    system = source()
    line = orjson.dumps({"source_system": system, "kind": "note", "external_id": "a/b", "data": {}})
    written = await client.post("/api/v1/records:bulk", content=line + b"\n", headers=NDJSON)
    if written.status_code == 422:
        assert names(assert_problem(written, 422), ["line", 1, "external_id"])
        return
    assert written.json()["created"] == 1, written.text
    replaced = await client.put(f"/api/v1/records/{system}/note/a/b", json={"data": {"n": 2}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["external_id"] == "a/b"
    assert replaced.json()["data"] == {"n": 2}
    deleted = await client.delete(f"/api/v1/records/{system}/note/a%2Fb")
    assert deleted.status_code == 204, deleted.text
    again = await client.delete(f"/api/v1/records/{system}/note/a/b")
    assert again.status_code == 404, again.text
    for odd in ("a\n", "a\nb", "a/", "/a"):  # newlines and edge slashes kept, as bulk keeps them
        put = await client.put(f"/api/v1/records/{system}/note/{quote(odd, safe='')}", json={"data": {}})
        assert (put.status_code, put.json()["external_id"]) == (201, odd), put.text


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("hub%2Fspot/deal/x", "source_system"),
        ("hubspot/de%2fal/x", "kind"),
        ("hub%2Fspot/de%2Fal", "source_system"),
    ],
)
async def test_an_encoded_slash_in_the_source_system_or_kind_is_refused_not_moved_into_the_id(
    client, method, path, field
):
    """With the external id the rest of the path, `hub%2Fspot/deal/x` decodes to source `hub`,
    kind `spot`, id `deal/x`: a write under a key the client never named. It is a 422 naming the
    segment, and nothing is written."""
    body = {"json": {"data": {}}} if method == "PUT" else {}
    answer = await client.request(method, f"/api/v1/records/{path}", **body)
    assert names(assert_problem(answer, 422), ["path", field])
    listed = await client.get("/api/v1/records", params={"source_system": "hub"})
    assert listed.json()["items"] == []


async def test_an_identifier_percent_encoded_without_a_slash_is_the_identifier(client):
    system = source()
    encoded = "".join(f"%{byte:02X}" for byte in system.encode())
    put = await client.put(f"/api/v1/records/{encoded}/note/x", json={"data": {}})
    assert (put.status_code, put.json()["source_system"]) == (201, system), put.text


async def test_a_bulk_body_starting_with_a_bom_is_refused_naming_line_1_and_writes_nothing(client):
    system = source()
    line = orjson.dumps({"source_system": system, "kind": "note", "external_id": "b", "data": {}})
    response = await client.post(
        "/api/v1/records:bulk", content=b"\xef\xbb\xbf" + line + b"\n" + line + b"\n", headers=NDJSON
    )
    assert names(assert_problem(response, 422), ["line", 1])
    listed = await client.get("/api/v1/records", params={"source_system": system})
    assert listed.json()["items"] == []


# --- POST /api/v1/events ------------------------------------------------------------------------


async def test_a_batch_naming_one_id_twice_is_refused_or_keeps_both(events_client, database):
    """Found here, fixed. Two different events with the same `id` in one batch are accepted (202,
    "accepted": 2, the id listed twice) and both reach JetStream, but the events sink
    (`database.events.store`: DISTINCT ON (id) ... ON CONFLICT (id) DO NOTHING) keeps one of
    them, unordered: the other is dropped with no word to the client."""
    event_id = str(uuid7())
    batch = [
        {"type": "user.event", "key": "u-1", "id": event_id, "payload": {"name": "deal.viewed"}},
        {"type": "user.event", "key": "u-1", "id": event_id, "payload": {"name": "deal.closed"}},
    ]
    response = await events_client.post("/api/v1/events", json=batch)
    if response.status_code != 202:
        assert names(assert_problem(response, 422), ["body", 1, "id"])
        return
    accepted = response.json()["accepted"]
    js = await events_client.nats.jetstream()
    documents = await stream_documents(js, events_client.specs["user-events"].name, unpack)
    await store_events(database)(documents)  # what the workers' events sink does with them
    async with database.connection() as connection:
        kept = await stored_events.count(connection, [event_id])
    assert kept == accepted, f"accepted {accepted}, stored {kept}"


async def test_an_events_body_that_stops_arriving_is_a_408_like_bulk(own_streams, api_keys):
    """Found here, fixed. `POST /api/v1/records:bulk` answers 408 once its body stops for
    `SOPHIA_BODY_IDLE_TIMEOUT_S`; `POST /api/v1/events` reads its body (up to 16 MB) with
    `await request.body()` and no timeout, and waits for good. Seen on live granian and uvicorn
    servers too (idle timeout 1 s: bulk 408 after 1.0 s, events no answer after 6 s)."""
    impatient = own_streams.model_copy(update={"body_idle_timeout_s": 0.1})
    release = asyncio.Event()

    async def stalling():
        yield b'[{"type":"user.event","key":"k",'
        await release.wait()
        yield b'"payload":{"name":"x"}}]'

    async with app_client(impatient, api_keys["write"]) as http:
        try:
            try:
                async with asyncio.timeout(1.0):
                    response = await http.post("/api/v1/events", content=stalling(), headers=JSON)
            except TimeoutError:
                pytest.fail("no answer 1 s after the body stopped (idle timeout 0.1 s)")
        finally:
            release.set()
    assert_problem(response, 408)


async def test_ndjson_events_separated_by_a_bare_cr_are_refused_naming_line_1(events_client):
    event = orjson.dumps({"type": "user.event", "key": "k", "payload": {"name": "x"}})
    response = await events_client.post("/api/v1/events", content=event + b"\r" + event, headers=NDJSON)
    assert names(assert_problem(response, 422), ["line", 1])


# --- Analytics: ranges at the edges of the calendar ---------------------------------------------


@pytest.mark.parametrize(
    "path", ["pipeline", "win-rate", "velocity", "cohorts", "funnel", "sentiment", "topics"]
)
async def test_analytics_over_the_whole_calendar_answer_200(client, path):
    for params in ({"from": "0001-01-01", "to": "9999-12-31"}, {"from": "9999-12-31"}, {"to": "0001-01-01"}):
        response = await client.get(f"/api/v1/analytics/{path}", params=params)
        assert response.status_code == 200, (params, response.text)
        assert "as_of" in response.json()


# --- GET /api/v1/records: the count of data filters ---------------------------------------------


async def _asgi_get(app: Any, path: str, query: bytes, secret: str) -> tuple[int, bytes]:
    """A GET through the ASGI app itself: httpx refuses URLs over 64 KiB."""
    scope = http_scope("GET", path, [(b"authorization", f"Bearer {secret}".encode())], query)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


async def test_a_list_with_too_many_data_filters_is_a_4xx_and_leaves_postgres_usable(settings, api_keys):
    """Found here, fixed (reached in-process; granian and uvicorn refuse URLs past about 64 KB, 414 / 400,
    so not through the servers as shipped). The list takes any number of `data.<key>=` filters
    (search takes 20); a numeric one binds two values, so 16,384 of them pass asyncpg's 32,767
    arguments: its InterfaceError is counted as an engine failure (`pool.ENGINE_ERRORS`), each
    answered 503 "PostgreSQL is unavailable: InterfaceError", and a few of them open the
    PostgreSQL breaker: every route of that API process then answers 503 for `breaker_open_s`."""
    query = b"&".join([b"data.k=1"] * 16_384)
    async with started_app(settings) as app:
        answers = [await _asgi_get(app, "/api/v1/records", query, api_keys["read"]) for _ in range(6)]
        plain = await _asgi_get(app, "/api/v1/records", b"limit=1", api_keys["read"])
    assert plain[0] == 200, plain
    assert all(status in {400, 422} for status, _ in answers), answers[0]


async def test_the_client_fixture_is_unharmed(client: httpx.AsyncClient):
    """The module's cases leave the shared app serving (none of them used its breaker)."""
    assert (await client.get("/api/v1/records", params={"limit": 1})).status_code == 200
