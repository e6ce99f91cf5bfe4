"""Edges of the ingest paths that schema fuzzing cannot reach: raw bytes and numbers as written."""

from __future__ import annotations

import uuid

import pytest
from app_clients import app_client
from nats.js.errors import NotFoundError
from problem_assertions import assert_problem

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


async def nothing_published(client) -> None:
    js = await client.nats.jetstream()
    with pytest.raises(NotFoundError):  # nothing was published, so not even the stream exists
        await js.stream_info(client.specs["user-events"].name)


def event_with(number: bytes) -> bytes:
    return b'{"type":"user.event","key":"k","payload":{"name":"n","properties":{"n":%s}}}' % number


GOOD_EVENT = event_with(b"1")


@pytest.mark.parametrize(
    "number",
    [b"18446744073709551616", b"-9223372036854775809", b"100000000000000000000000000000"],
    ids=["2^64", "below-int64", "30-digits"],
)
async def test_an_integer_past_64_bits_in_an_event_is_refused_naming_where_not_rounded(events_client, number):
    """orjson reads such an integer as a double: accepted, the event would carry another number."""
    body = b"[" + GOOD_EVENT + b"," + event_with(number) + b"]"
    problem = assert_problem(await events_client.post("/api/v1/events", content=body, headers=JSON), 422)
    assert problem["errors"][0]["location"] == ["body", 1, "payload", "properties", "n"]
    assert "64 bits" in problem["detail"]
    lines = GOOD_EVENT + b"\r\n\n" + event_with(number)  # CRLF, a blank line, no final newline
    problem = assert_problem(await events_client.post("/api/v1/events", content=lines, headers=NDJSON), 422)
    assert problem["errors"][0]["location"] == ["line", 3, "payload", "properties", "n"]
    await nothing_published(events_client)


async def test_integers_up_to_64_bits_and_long_digit_runs_in_text_are_accepted_exactly(events_client):
    numbers = b"[18446744073709551615, -9223372036854775808, 12345678901234567890123.5]"
    text = b'"12345678901234567890123456789"'
    body = b"[" + event_with(numbers) + b"," + event_with(text) + b"]"
    response = await events_client.post("/api/v1/events", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2


def new_source() -> str:
    return f"review-{uuid.uuid4().hex[:12]}"


def record_line(source: str, external_id: str, data: bytes) -> bytes:
    return b'{"source_system":"%s","kind":"deal","external_id":"%s","data":%s}' % (
        source.encode(),
        external_id.encode(),
        data,
    )


async def count_rows(database, source_system: str) -> int:
    async with database.connection() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM sophia_core.unified_data_catalog WHERE source_system = $1", source_system
        )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"note":"a\\u0000b","note":"ok"}', "u0000"),
        (b'{"deep":{"k":"\\\\\\u0000"},"deep":{}}', "u0000"),
        (b'{"n":1e-16384}', "numeric"),
        (b'{"n":0.' + b"0" * 16383 + b"1}", "numeric"),
        (b'{"n":1.' + b"0" * 16384 + b"}", "numeric"),
        (b'{"n":[1,2.5E-20000]}', "numeric"),
        (b'{"n":0e1073741824}', "numeric"),
    ],
    ids=[
        "nul-in-a-replaced-value",
        "escaped-backslash-then-nul",
        "tiny-exponent",
        "tiny-fraction",
        "long-fraction",
        "in-an-array",
        "zero-past-the-exponent-limit",
    ],
)
async def test_a_bulk_line_postgres_would_refuse_is_named_by_its_line(client, database, data, reason):
    """What orjson and pydantic take but PostgreSQL's jsonb refuses was a 422 naming no line."""
    source = new_source()
    good = record_line(source, "good", b"{}")
    body = good + b"\r\n\n" + record_line(source, "bad", data)  # CRLF, a blank line, no final newline
    response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"][:2] == ["line", 3]
    assert "Line 3" in problem["detail"]
    assert reason in problem["detail"]
    assert await count_rows(database, source) == 0


async def test_bulk_numbers_and_text_postgres_can_store_are_written_exactly(client, database):
    source = new_source()
    data = [
        b'{"n":1e-16383,"m":1.5e-16382,"k":100000000000000000000000000000}',
        b'{"text":"1e-99999 and \\\\u0000"}',
        b'{"n":' + b"1" + b"0" * 1000 + b"e-1200}",
    ]
    body = b"\n".join(record_line(source, f"r-{n}", d) for n, d in enumerate(data))
    response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 3
    page = (await client.get("/api/v1/records", params={"source_system": source})).json()
    texts = {item["external_id"]: item["data"] for item in page["items"]}
    assert texts["r-1"] == {"text": "1e-99999 and \\u0000"}
    assert texts["r-0"]["k"] == 100000000000000000000000000000


async def test_the_refused_line_is_found_in_a_body_spooled_to_a_file(settings, api_keys, database):
    """1,000 lines, blank ones among them, some with created_at: the spool is in a file, and the
    line named is the one sent, not the row's position in the COPY."""
    tight = settings.model_copy(update={"bulk_spool_memory_bytes": 1024})
    source = new_source()
    lines = [record_line(source, f"r-{n}", b'{"n":%d}' % n) for n in range(1_000)]
    lines[10] = lines[10][:-1] + b',"created_at":"2026-01-01T00:00:00Z"}'
    lines[700] = record_line(source, "bad", b'{"n":1e-16384}')
    body = b"\n\n".join(lines)  # a blank line after every line: line 1401 is the bad one
    async with app_client(tight, api_keys["write"]) as client:
        response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["line", 1401]
    assert await count_rows(database, source) == 0
