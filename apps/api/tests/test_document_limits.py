"""Where parsing and re-serializing disagree (lone surrogates, deep nesting), every path answers one
clear 422 naming the field, and writes or publishes nothing: never a 500 from a later step."""

from __future__ import annotations

import uuid

import pytest
from app_clients import app_client
from problem_assertions import assert_problem

from sophia.core.documents import MAX_DEPTH

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
SURROGATE = '"\\ud800"'  # what Python's JSON parser reads as a lone surrogate


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.fixture(scope="module")
async def ml_admin(settings, api_keys):
    async with app_client(settings.model_copy(update={"ml_enabled": True}), api_keys["admin"]) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/ml/embed", f'{{"inputs": ["fine", {SURROGATE}]}}', ["body", "inputs", 1]),
        ("/api/v1/ml/classify", f'{{"inputs": [{SURROGATE}]}}', ["body", "inputs", 0]),
        ("/api/v1/ml/sentiment", f'{{"inputs": [{SURROGATE}]}}', ["body", "inputs", 0]),
        (
            "/v1/embeddings",
            f'{{"input": {SURROGATE}, "model": "all-MiniLM-L6-v2"}}',
            ["body", "input"],
        ),
    ],
    ids=["embed", "classify", "sentiment", "openai"],
)
async def test_a_lone_surrogate_sent_to_a_model_is_a_422_naming_the_input(ml_admin, path, body, field):
    problem = assert_problem(await ml_admin.post(path, content=body, headers=JSON), 422)
    assert problem["errors"][0]["location"][: len(field)] == field
    assert "lone surrogate (U+D800)" in problem["errors"][0]["message"]


@pytest.mark.parametrize("levels", [MAX_DEPTH, 300, 1000])
async def test_an_event_payload_nested_too_deep_is_a_422_and_nothing_is_published(client, levels):
    key = f"deep-{uuid.uuid4().hex[:8]}"
    body = f'[{{"type": "user.event", "key": "{key}", "payload": {{"name": "x", "deep": {nested(levels)}}}}}]'
    problem = assert_problem(await client.post("/api/v1/events", content=body, headers=JSON), 422)
    assert problem["errors"][0]["location"][:3] == ["body", 0, "payload"]
    assert f"nested deeper than {MAX_DEPTH} levels" in problem["detail"]
    ndjson = body[1:-1].encode()
    problem = assert_problem(await client.post("/api/v1/events", content=ndjson, headers=NDJSON), 422)
    assert problem["errors"][0]["location"][:3] == ["line", 1, "payload"]


async def test_an_event_payload_at_the_limit_is_accepted(client):
    body = (
        f'[{{"type": "user.event", "key": "k", "payload": {{"name": "x", "deep": {nested(MAX_DEPTH - 2)}}}}}]'
    )
    assert (await client.post("/api/v1/events", content=body, headers=JSON)).status_code == 202


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (f'{{"a": {SURROGATE}}}', "a: holds a lone surrogate (U+D800)"),
        (f"{{{SURROGATE}: 1}}", "the key holds a lone surrogate"),
        (f'{{"a": {nested(300)}}}', f"nested deeper than {MAX_DEPTH} levels"),
        (f'{{"a": {nested(MAX_DEPTH)}}}', f"nested deeper than {MAX_DEPTH} levels"),
    ],
    ids=["surrogate", "surrogate-key", "300-levels", "one-past-the-limit"],
)
async def test_a_record_the_catalog_could_not_return_is_a_422_by_put_and_by_bulk(client, data, message):
    source = f"lim{uuid.uuid4().hex[:8]}"
    put = await client.put(f"/api/v1/records/{source}/deal/1", content=f'{{"data": {data}}}', headers=JSON)
    problem = assert_problem(put, 422)
    assert problem["errors"][0]["location"] == ["body", "data"]
    assert message in problem["errors"][0]["message"]
    line = f'{{"source_system": "{source}", "kind": "deal", "external_id": "2", "data": {data}}}\n'
    bulk = await client.post("/api/v1/records:bulk", content=line, headers=NDJSON)
    problem = assert_problem(bulk, 422)
    assert problem["errors"][0]["location"][:2] == ["line", 1]
    stored = await client.get("/api/v1/records", params={"source_system": source})
    assert stored.json()["items"] == []


async def test_a_record_nested_to_the_limit_is_stored_and_read_back_by_both_paths(client):
    source = f"lim{uuid.uuid4().hex[:8]}"
    data = f'{{"a": {nested(MAX_DEPTH - 1)}}}'
    put = await client.put(f"/api/v1/records/{source}/deal/1", content=f'{{"data": {data}}}', headers=JSON)
    assert put.status_code == 201, put.text
    line = f'{{"source_system": "{source}", "kind": "deal", "external_id": "2", "data": {data}}}\n'
    assert (await client.post("/api/v1/records:bulk", content=line, headers=NDJSON)).status_code == 200
    page = await client.get("/api/v1/records", params={"source_system": source})
    assert [len(str(item["data"])) for item in page.json()["items"]] == [len(str(put.json()["data"]))] * 2
