"""Contract of bodies the API cannot read: every one a 4xx problem saying what is wrong and where.

FastAPI parses the JSON body of a route with a pydantic body parameter itself; what its parser
refuses (not UTF-8, integers over Python's 4,300 digits, nesting past the recursion limit) and a
body that is not labelled JSON get the same problems as the rest of the API, not its generic
"There was an error parsing the body" or "Input should be a valid dictionary". A compressed body
(any Content-Encoding but identity) is refused on every route that reads one.
"""

from __future__ import annotations

import gzip
import uuid

import httpx
import orjson
import pytest
from problem_assertions import assert_problem

JSON = {"content-type": "application/json"}
GZIP = {"content-encoding": "gzip"}


def record_path() -> str:
    return f"/api/v1/records/body-{uuid.uuid4().hex[:12]}/deal/r-1"


# A JSON body for each route FastAPI parses itself, with where its one free-form value sits.
JSON_ROUTES = [
    pytest.param("PUT", record_path, lambda value: {"data": {"a": value}}, ("data", "a"), id="put-record"),
    pytest.param("POST", lambda: "/api/v1/search", lambda value: {"q": value}, ("q",), id="search"),
]


def encoded(document: object, value: bytes) -> bytes:
    """`document` as JSON with its "VALUE" string replaced by the raw bytes `value`."""
    return orjson.dumps(document).replace(b'"VALUE"', value)


async def _records_of(client: httpx.AsyncClient, path: str) -> list:
    source_system = path.split("/")[4]
    listed = await client.get("/api/v1/records", params={"source_system": source_system})
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]


@pytest.mark.parametrize(("method", "url", "body_of", "where"), JSON_ROUTES)
@pytest.mark.parametrize(
    "headers", [{"content-type": "text/plain"}, {}], ids=["text-plain", "no-content-type"]
)
async def test_a_json_body_not_labelled_json_is_a_415_naming_the_content_type(
    client, method, url, body_of, where, headers
):
    content = orjson.dumps(body_of("x"))
    body = assert_problem(await client.request(method, url(), content=content, headers=headers), 415)
    assert body["title"] == "Unsupported media type"
    assert "application/json" in body["detail"]
    got = f"got {headers.get('content-type', 'nothing')}"
    assert body["errors"] == [{"location": ["header", "Content-Type"], "message": got}]


@pytest.mark.parametrize(("method", "url", "body_of", "where"), JSON_ROUTES)
async def test_a_body_that_is_not_utf8_is_a_400_naming_the_byte(client, method, url, body_of, where):
    content = encoded(body_of("VALUE"), b'"caf\xe9"')
    body = assert_problem(await client.request(method, url(), content=content, headers=JSON), 400)
    assert body["title"] == "Malformed JSON"
    offset = content.index(b"\xe9")
    assert body["errors"] == [
        {"location": ["body", offset], "message": f"not valid UTF-8: byte 0xe9 at byte {offset}"}
    ]


@pytest.mark.parametrize(("method", "url", "body_of", "where"), JSON_ROUTES)
async def test_a_gzip_body_labelled_plain_json_is_a_400_not_utf8(client, method, url, body_of, where):
    content = gzip.compress(orjson.dumps(body_of("x")))
    body = assert_problem(await client.request(method, url(), content=content, headers=JSON), 400)
    assert body["errors"][0]["location"] == ["body", 1]  # gzip's magic: 1f 8b
    assert "UTF-8" in body["detail"]


@pytest.mark.parametrize(("method", "url", "body_of", "where"), JSON_ROUTES)
async def test_an_integer_over_pythons_digit_limit_is_a_422_naming_where_it_is(
    client, method, url, body_of, where
):
    content = encoded(body_of("VALUE"), b"9" * 5000)
    body = assert_problem(await client.request(method, url(), content=content, headers=JSON), 422)
    assert body["errors"] == [
        {"location": ["body", *where], "message": "an integer of 5000 digits: at most 4300 are read"}
    ]
    assert body["detail"].startswith("body." + ".".join(where))


@pytest.mark.parametrize(("method", "url", "body_of", "where"), JSON_ROUTES)
@pytest.mark.parametrize("depth", [1_200, 100_000])
async def test_nesting_past_the_parsers_recursion_limit_is_a_422_naming_where(
    client, method, url, body_of, where, depth
):
    content = encoded(body_of("VALUE"), b"[" * depth + b"]" * depth)
    body = assert_problem(await client.request(method, url(), content=content, headers=JSON), 422)
    openings = [at for at, byte in enumerate(content) if byte in b"[{"]  # no string holds one
    too_deep = openings[128]  # where the 129th level opens
    assert body["errors"] == [{"location": ["body", too_deep], "message": "nested deeper than 128 levels"}]


@pytest.mark.parametrize(
    ("content", "status"),
    [(b'{"data": {"a": "\xff"}}', 400), (b'{"data": {"a": ' + b"1" * 4301 + b"}}", 422)],
    ids=["not-utf8", "long-integer"],
)
async def test_a_record_put_with_an_unreadable_body_writes_nothing(client, content, status):
    path = record_path()
    assert_problem(await client.put(path, content=content, headers=JSON), status)
    assert await _records_of(client, path) == []


def _events() -> bytes:
    return orjson.dumps([{"type": "system.event", "key": "body-errors", "payload": {"name": "x"}}])


def _bulk() -> bytes:
    return orjson.dumps({"source_system": "body-errors", "kind": "deal", "external_id": "b-1", "data": {}})


BODY_ROUTES = [
    pytest.param("PUT", record_path, JSON, lambda: orjson.dumps({"data": {}}), id="put-record"),
    pytest.param("POST", lambda: "/api/v1/search", JSON, lambda: orjson.dumps({"q": "x"}), id="search"),
    pytest.param("POST", lambda: "/api/v1/events", JSON, _events, id="events"),
    pytest.param(
        "POST", lambda: "/api/v1/records:bulk", {"content-type": "application/x-ndjson"}, _bulk, id="bulk"
    ),
]


@pytest.mark.parametrize(("method", "url", "headers", "content"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("encoding", "compressed"),
    [("gzip", True), ("gzip", False), ("br", False), ("identity, gzip", False)],
    ids=["gzip", "gzip-label-on-a-plain-body", "br", "identity-then-gzip"],
)
async def test_a_body_with_a_content_encoding_is_a_415_naming_the_header(
    client, method, url, headers, content, encoding, compressed
):
    """Refused whether or not the body is really compressed: it is never read as if it were not."""
    raw = content()
    sent = gzip.compress(raw) if compressed else raw
    response = await client.request(
        method, url(), content=sent, headers={**headers, "content-encoding": encoding}
    )
    body = assert_problem(response, 415)
    assert body["title"] == "Unsupported media type"
    assert "does not decompress request bodies" in body["detail"]
    assert body["errors"] == [{"location": ["header", "Content-Encoding"], "message": f"got {encoding}"}]


async def test_a_refused_encoded_put_writes_nothing(client):
    path = record_path()
    response = await client.put(path, content=orjson.dumps({"data": {}}), headers={**JSON, **GZIP})
    assert_problem(response, 415)
    assert await _records_of(client, path) == []


@pytest.mark.parametrize("encoding", ["identity", "IDENTITY", ""])
async def test_a_body_with_content_encoding_identity_is_read(client, encoding):
    headers = {**JSON, "content-encoding": encoding}
    response = await client.put(record_path(), content=orjson.dumps({"data": {}}), headers=headers)
    assert response.status_code == 201, response.text


async def test_a_request_without_a_body_is_not_refused_for_its_content_encoding(client):
    response = await client.get("/api/v1/records", params={"limit": 1}, headers=GZIP)
    assert response.status_code == 200, response.text


async def test_a_bad_key_is_answered_before_the_encoding_of_the_body(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as anonymous:
        response = await anonymous.put(
            record_path(), content=gzip.compress(b'{"data": {}}'), headers={**JSON, **GZIP}
        )
    assert_problem(response, 401)
