"""POST /api/v1/search: from a catalog write, through enrichment, to a search hit; by meaning,
by words and both; with the records list's filters; words only without the models."""

from __future__ import annotations

import uuid

import pytest
from app_clients import app_client
from problem_assertions import assert_problem

from sophia.core.events import Envelope
from sophia.ml.enrichment import DEFAULT_TEXT_FIELDS, Enricher, read_text_fields
from sophia.workers.sinks import enrich_records

MESSAGES = {
    "m-price": "The customer says our price is far too high compared to last year.",
    "m-outage": "Dashboards have been down since the outage this morning, support is escalating.",
    "m-lunch": "Team lunch on Friday at noon, everyone is welcome.",
    "m-seats": "Globex wants fifty more seats for their sales department.",
}


@pytest.fixture(scope="module")
async def world(settings, api_keys, database):
    """An app with the models, and a source of messages written through the API and enriched."""
    source = f"search{uuid.uuid4().hex[:8]}"
    ml = settings.model_copy(update={"ml_enabled": True})
    async with app_client(ml, api_keys["write"]) as client:
        envelopes = []
        for external_id, text in MESSAGES.items():
            written = await client.put(
                f"/api/v1/records/{source}/message/{external_id}", json={"data": {"text": text}}
            )
            assert written.status_code == 201, written.text
            payload = {"id": written.json()["id"], "source_system": source, "kind": "message", "version": 1}
            envelopes.append(
                Envelope.new("record.upserted", f"{source}/message/{external_id}", payload, source="t")
            )
        models = client._transport.app.state.sophia.models  # type: ignore[attr-defined]
        enricher = Enricher(models.embeddings.encoder, models.labels, read_text_fields(DEFAULT_TEXT_FIELDS))
        await enrich_records(database, enricher, models.embeddings.version)(envelopes)
        client.source = source  # type: ignore[attr-defined]
        yield client


def external_ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["record"]["external_id"] for item in response.json()["items"]]


async def test_a_question_in_other_words_finds_the_record_by_meaning(world):
    body = {
        "q": "client unhappy about how expensive we are",
        "k": 2,
        "filters": {"source_system": world.source},
    }
    response = await world.post("/api/v1/search", json=body)
    assert response.json()["mode"] == "hybrid"
    assert external_ids(response)[0] == "m-price"
    top = response.json()["items"][0]
    assert top["semantic_rank"] == 1
    assert top["record"]["data"]["text"] == MESSAGES["m-price"]


async def test_a_word_match_and_a_meaning_match_agree_and_rank_first(world):
    body = {"q": "outage", "k": 4, "filters": {"source_system": world.source}}
    response = await world.post("/api/v1/search", json=body)
    first = response.json()["items"][0]
    assert first["record"]["external_id"] == "m-outage"
    assert (first["semantic_rank"], first["lexical_rank"]) == (1, 1)
    scores = [item["score"] for item in response.json()["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_filters_narrow_the_search_like_the_records_list(world):
    body = {"q": "outage", "filters": {"source_system": world.source, "data": {"text": MESSAGES["m-lunch"]}}}
    assert external_ids(await world.post("/api/v1/search", json=body)) == ["m-lunch"]
    other = {"q": "outage", "filters": {"source_system": "nosuchsource"}}
    assert external_ids(await world.post("/api/v1/search", json=other)) == []


async def test_without_the_models_search_is_by_words_only(world, client):
    body = {"q": "seats", "filters": {"source_system": world.source}}
    response = await client.post("/api/v1/search", json=body)  # the session app: SOPHIA_ML_ENABLED off
    assert response.json()["mode"] == "lexical"
    assert external_ids(response) == ["m-seats"]
    assert response.json()["items"][0]["semantic_rank"] is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"q": ""}, ["body", "q"]),
        ({"q": "x", "k": 0}, ["body", "k"]),
        ({"q": "x", "k": 101}, ["body", "k"]),
        ({"q": "x", "filters": {"kind": "Not An Identifier"}}, ["body", "filters", "kind"]),
        ({"q": "x", "filters": {"colour": "red"}}, ["body", "filters", "colour"]),
        ({"q": "x", "extra": True}, ["body", "extra"]),
    ],
)
async def test_bad_search_input_is_a_422_naming_where(client, body, where):
    problem = assert_problem(await client.post("/api/v1/search", json=body), 422)
    assert problem["errors"][0]["location"][: len(where)] == where
