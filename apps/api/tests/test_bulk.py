"""Contract of POST /api/v1/records:bulk: streamed NDJSON, every line written or none."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from app_clients import http_scope
from problem_assertions import assert_problem

from sophia.api.app import create_app

NDJSON = {"content-type": "application/x-ndjson"}


def new_source() -> str:
    return f"bulk-{uuid.uuid4().hex[:12]}"


def line(source_system: str, number: int, **fields: object) -> bytes:
    record = {
        "source_system": source_system,
        "kind": "deal",
        "external_id": f"r-{number}",
        "data": {"n": number},
    }
    return orjson.dumps({**record, **fields})


def batch(source_system: str, count: int) -> list[bytes]:
    return [line(source_system, number) for number in range(1, count + 1)]


async def post_bulk(client: httpx.AsyncClient, lines: list[bytes] | bytes, **headers: str) -> httpx.Response:
    body = b"\n".join(lines) if isinstance(lines, list) else lines
    return await client.post("/api/v1/records:bulk", content=body, headers={**NDJSON, **headers})


async def count_rows(database, source_system: str) -> int:
    async with database.connection() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM sophia_core.unified_data_catalog WHERE source_system = $1", source_system
        )


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture(scope="module")
async def small_client(settings, api_keys):
    """A client on an app of its own whose bulk body and line limits are small."""
    limited = settings.model_copy(update={"max_bulk_bytes": 4096, "max_line_bytes": 256})
    application = create_app(limited)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        headers = {"Authorization": f"Bearer {api_keys['write']}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sophia.test", headers=headers
        ) as http:
            yield http


async def test_bulk_creates_1000_records(client, database):
    source = new_source()
    response = await post_bulk(client, batch(source, 1000))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1000, "created": 1000, "updated": 0}
    assert await count_rows(database, source) == 1000


async def test_bulk_posted_again_updates_every_record(client, database):
    source = new_source()
    await post_bulk(client, batch(source, 1000))
    response = await post_bulk(client, batch(source, 1000))
    assert response.json() == {"received": 1000, "created": 0, "updated": 1000}
    assert await count_rows(database, source) == 1000


async def test_bulk_with_a_key_twice_in_one_batch_keeps_the_last_line(client):
    source = new_source()
    lines = [line(source, 1, data={"take": "first"}), line(source, 2), line(source, 1, data={"take": "last"})]
    response = await post_bulk(client, lines)
    assert response.json() == {"received": 3, "created": 2, "updated": 0}
    page = (await client.get("/api/v1/records", params={"source_system": source, "data.take": "last"})).json()
    assert [item["external_id"] for item in page["items"]] == ["r-1"]


async def test_bulk_accepts_a_final_line_without_newline_and_crlf_endings(client):
    source = new_source()
    body = line(source, 1) + b"\r\n" + line(source, 2)
    assert (await post_bulk(client, body)).json() == {"received": 2, "created": 2, "updated": 0}


async def test_bulk_with_an_empty_body_writes_nothing(client):
    assert (await post_bulk(client, b"")).json() == {"received": 0, "created": 0, "updated": 0}


async def test_bulk_rejects_malformed_json_at_line_500_of_1000_and_writes_nothing(client, database):
    source = new_source()
    lines = batch(source, 1000)
    lines[499] = b'{"source_system": "' + source.encode() + b'", "kind": '
    body = assert_problem(await post_bulk(client, lines), 422)
    assert "Line 500" in body["detail"]
    assert body["errors"][0]["location"][:2] == ["line", 500]
    assert await count_rows(database, source) == 0


async def test_bulk_rejects_a_wrong_type_at_line_500_naming_the_line_and_field(client, database):
    source = new_source()
    lines = batch(source, 1000)
    lines[499] = line(source, 500, kind=5)
    body = assert_problem(await post_bulk(client, lines), 422)
    assert "Line 500, field kind" in body["detail"]
    assert body["errors"][0]["location"] == ["line", 500, "kind"]
    assert await count_rows(database, source) == 0


async def test_bulk_rejects_an_unknown_field_naming_it(client, database):
    source = new_source()
    body = assert_problem(await post_bulk(client, [line(source, 1), line(source, 2, colour="red")]), 422)
    assert body["errors"][0]["location"] == ["line", 2, "colour"]
    assert await count_rows(database, source) == 0


async def test_bulk_rejects_a_missing_field_naming_it(client, database):
    source = new_source()
    incomplete = orjson.dumps({"source_system": source, "kind": "deal", "data": {}})
    body = assert_problem(await post_bulk(client, [line(source, 1), incomplete]), 422)
    assert body["errors"][0]["location"] == ["line", 2, "external_id"]
    assert await count_rows(database, source) == 0


@pytest.mark.parametrize("value", [b"[1, 2]", b'"text"', b"null"])
async def test_bulk_rejects_a_line_that_is_not_an_object(client, value):
    body = assert_problem(await post_bulk(client, [line(new_source(), 1), value]), 422)
    assert body["errors"][0]["location"][:2] == ["line", 2]


async def test_bulk_skips_blank_lines_but_counts_them_in_line_numbers(client):
    source = new_source()
    good = [line(source, 1), b"", b"   ", line(source, 2)]
    assert (await post_bulk(client, good)).json() == {"received": 2, "created": 2, "updated": 0}
    bad = assert_problem(await post_bulk(client, [*good, b"", line(source, 3, kind=5)]), 422)
    assert bad["errors"][0]["location"] == ["line", 6, "kind"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_bulk_with_another_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    body = b"\n".join(batch(new_source(), 2))
    response = await client.post("/api/v1/records:bulk", content=body, headers=headers)
    assert_problem(response, 415)


async def test_bulk_accepts_content_type_parameters_and_other_ndjson_names(client):
    for content_type in ["application/x-ndjson; charset=utf-8", "application/jsonl", "Application/NDJSON"]:
        response = await post_bulk(client, batch(new_source(), 1), **{"content-type": content_type})
        assert response.status_code == 200, (content_type, response.text)


async def test_bulk_adds_one_outbox_event_per_distinct_record(client, database):
    source = new_source()
    await post_bulk(client, [line(source, 1), line(source, 2), line(source, 1)])
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT key, event_type FROM sophia_core.outbox WHERE key LIKE $1 ORDER BY key", f"{source}/%"
        )
    assert [(row["key"], row["event_type"]) for row in rows] == [
        (f"{source}/deal/r-1", "record.upserted"),
        (f"{source}/deal/r-2", "record.upserted"),
    ]


async def test_bulk_with_declared_length_over_max_bulk_bytes_is_413_and_writes_nothing(
    small_client, database
):
    source = new_source()
    response = await post_bulk(small_client, batch(source, 100))
    assert assert_problem(response, 413)["max_bytes"] == 4096
    assert await count_rows(database, source) == 0


async def test_bulk_streamed_over_max_bulk_bytes_is_413_and_writes_nothing(small_client, database):
    source = new_source()
    body = b"\n".join(batch(source, 100))
    response = await small_client.post("/api/v1/records:bulk", content=chunked(body, 512), headers=NDJSON)
    assert assert_problem(response, 413)["max_bytes"] == 4096
    assert await count_rows(database, source) == 0


async def test_bulk_streamed_under_max_bulk_bytes_is_written(small_client, database):
    source = new_source()
    body = b"\n".join(batch(source, 20))
    response = await small_client.post("/api/v1/records:bulk", content=chunked(body, 100), headers=NDJSON)
    assert response.json() == {"received": 20, "created": 20, "updated": 0}
    assert await count_rows(database, source) == 20


@pytest.mark.parametrize(
    "layout",
    [
        "streamed in small chunks",
        "last line without newline",
        "whole line and its newline in one chunk",
    ],
)
async def test_bulk_rejects_a_line_longer_than_max_line_bytes(small_client, database, layout):
    source = new_source()
    long_line = line(source, 2, data={"pad": "x" * 300})
    body = line(source, 1) + b"\n" + long_line
    if layout == "whole line and its newline in one chunk":
        content: bytes | AsyncIterator[bytes] = body + b"\n"
    elif layout == "streamed in small chunks":
        content = chunked(body + b"\n", 64)
    else:
        content = body
    response = await small_client.post("/api/v1/records:bulk", content=content, headers=NDJSON)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["line", 2]
    assert await count_rows(database, source) == 0


@pytest.mark.parametrize(
    "bad_line",
    [
        b'{"source_system": "%s", "kind": "deal", "external_id": "r-2", "data": {"note": "a\\u0000b"}}',
        b'{"source_system": "%s", "kind": "deal", "external_id": "r\\u0000", "data": {}}',
        b'{"source_system": "%s", "kind": "deal", "external_id": "r-2", "data": {"n": NaN}}',
    ],
    ids=["nul-in-data", "nul-in-external-id", "nan-in-data"],
)
async def test_bulk_rejects_a_value_postgres_cannot_store_with_422_not_500(app, api_keys, database, bad_line):
    source = new_source()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {api_keys['write']}", **NDJSON}
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        body = line(source, 1) + b"\n" + bad_line % source.encode()
        response = await http.post("/api/v1/records:bulk", content=body, headers=headers)
    assert_problem(response, 422)
    assert await count_rows(database, source) == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [('{"note":"a\\u0000b"}', "NUL"), ('{"n":NaN}', "NaN"), ('{"n":1e999999}', "Infinity")],
)
async def test_a_value_postgres_cannot_store_is_named_by_line_and_field(client, data, reason):
    source = new_source()
    good = f'{{"source_system":"{source}","kind":"deal","external_id":"ok","data":{{}}}}'
    bad = f'{{"source_system":"{source}","kind":"deal","external_id":"bad","data":{data}}}'
    body = assert_problem(await post_bulk(client, [good.encode(), bad.encode()]), 422)
    assert body["errors"][0]["location"][:3] == ["line", 2, "data"], reason


async def test_bulk_whose_client_hangs_up_midway_writes_nothing_and_is_no_server_error(
    app, api_keys, database
):
    """What a server delivers when the client goes away while its body streams in: a disconnect."""
    source = new_source()
    arriving = [
        {"type": "http.request", "body": b"\n".join(batch(source, 10)) + b"\n", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return arriving.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [
        (b"content-type", b"application/x-ndjson"),
        (b"authorization", f"Bearer {api_keys['write']}".encode()),
    ]
    scope = http_scope("POST", "/api/v1/records:bulk", headers)
    await app(scope, receive, send)
    assert arriving == []
    assert sent[0]["status"] == 499  # in the access log and the metrics: the client closed the request
    assert await count_rows(database, source) == 0
