"""The enrichment sink against real PostgreSQL: changed calls, messages and deals get embeddings,
labels and ml.prediction events; other kinds nothing; an older version never overwrites a newer."""

from __future__ import annotations

import uuid

import pytest

from sophia.core.errors import Unavailable
from sophia.core.events import Envelope
from sophia.database import Database
from sophia.database.enrichment import PREDICTIONS_TOPIC
from sophia.ml.embeddings import model_version
from sophia.ml.enrichment import DEFAULT_TEXT_FIELDS, Enricher, read_text_fields
from sophia.ml.labels import DEFAULT_LABELS, ZeroShotClassifier, read_labels
from sophia.ml.sentiment import EmbeddingSentiment
from sophia.workers.sinks import enrich_records

VERSION = "test-model-1"


@pytest.fixture(scope="module")
def enricher(sentence_encoder) -> Enricher:
    encoder = sentence_encoder
    labels = ZeroShotClassifier.build(
        encoder, read_labels(DEFAULT_LABELS), 0.3, model_version(quantized=True)
    )
    head = EmbeddingSentiment.load(model_version=model_version(quantized=True))
    return Enricher(encoder, labels, read_text_fields(DEFAULT_TEXT_FIELDS), head)


async def insert(database, kind: str, data: dict) -> uuid.UUID:
    source = f"enrich{uuid.uuid4().hex[:8]}"
    async with database.connection() as connection:
        return await connection.fetchval(
            "INSERT INTO sophia_core.unified_data_catalog (source_system, kind, external_id, data) "
            "VALUES ($1, $2, 'e-1', $3) RETURNING id",
            source,
            kind,
            data,
        )


def upserted(record_id: uuid.UUID, kind: str, event_type: str = "record.upserted") -> Envelope:
    payload = {"id": str(record_id), "source_system": "s", "kind": kind, "external_id": "e-1", "version": 1}
    return Envelope.new(event_type, f"s/{kind}/e-1", payload, source="catalog")


async def test_a_record_to_enrich_again_gets_the_labels_of_the_classifier_now_served(database, enricher):
    message = await insert(database, "message", {"text": "Can we get a discount on the annual plan?"})
    async with database.connection() as connection:  # labeled earlier by another classifier
        await connection.execute(
            "INSERT INTO sophia_core.record_predictions (record_id, task, model_version, record_version, "
            "prediction) VALUES ($1, 'classification', 'old-head', 1, '{\"labels\": []}')",
            message,
        )
    await enrich_records(database, enricher, VERSION)([upserted(message, "message", "record.reenrich")])
    async with database.connection() as connection:
        row = await connection.fetchrow(
            "SELECT model_version, prediction FROM sophia_core.record_predictions "
            "WHERE record_id = $1 AND task = 'classification'",
            message,
        )
    assert row["model_version"] == enricher.labels.version
    assert "pricing" in row["prediction"]["labels"]


async def test_records_with_text_are_enriched_once_with_their_events(database, enricher):
    message = await insert(database, "message", {"text": "They want 50 more seats for the sales team."})
    contact = await insert(database, "contact", {"firstname": "Ana"})
    sink = enrich_records(database, enricher, VERSION)
    batch = [upserted(message, "message"), upserted(contact, "contact")]
    await sink(batch)
    await sink(batch)  # redelivered: the same rows, no second event of a newer version
    async with database.connection() as connection:
        embedded = await connection.fetch(
            "SELECT record_id, model_version, record_version, content, vector_dims(embedding) AS dims "
            "FROM sophia_core.record_embeddings WHERE record_id = ANY($1::uuid[])",
            [message, contact],
        )
        predicted = {
            row["task"]: row["prediction"]
            for row in await connection.fetch(
                "SELECT task, prediction FROM sophia_core.record_predictions WHERE record_id = $1", message
            )
        }
        events = await connection.fetch(
            "SELECT event_type, key, payload FROM sophia_core.outbox WHERE topic = $1 AND key = $2",
            PREDICTIONS_TOPIC,
            str(message),
        )
    assert [(r["record_id"], r["model_version"], r["record_version"], r["dims"]) for r in embedded] == [
        (message, VERSION, 1, 384)
    ]
    assert embedded[0]["content"].startswith("They want 50 more seats")
    assert predicted["classification"]["labels"][0] == "expansion"
    assert predicted["sentiment"]["label"] in {"positive", "neutral"}
    assert {event["event_type"] for event in events} == {"ml.prediction"}
    assert sorted(event["payload"]["task"] for event in events) == ["classification", "sentiment"]
    by_task = {event["payload"]["task"]: event["payload"]["model_version"] for event in events}
    assert by_task == {  # each task says which model gave it: a label set, a head
        "classification": enricher.labels.version,
        "sentiment": enricher.sentiment.version,
    }
    assert by_task["classification"].startswith(f"{model_version(quantized=True)}+zero-shot-")


async def test_an_older_record_version_never_overwrites_a_newer_one(database, enricher):
    deal = await insert(database, "deal", {"dealname": "Acme renewal"})
    sink = enrich_records(database, enricher, VERSION)
    async with database.connection() as connection:
        await connection.execute(
            'UPDATE sophia_core.unified_data_catalog SET data = \'{"dealname": "Acme renewal v2"}\', '
            "version = 2 WHERE id = $1",
            deal,
        )
    await sink([upserted(deal, "deal")])  # reads version 2
    async with database.connection() as connection:
        await connection.execute(  # a late, stale enrichment of version 1 arrives
            'UPDATE sophia_core.unified_data_catalog SET data = \'{"dealname": "stale"}\', version = 1 '
            "WHERE id = $1",
            deal,
        )
    await sink([upserted(deal, "deal")])
    async with database.connection() as connection:
        row = await connection.fetchrow(
            "SELECT content, record_version FROM sophia_core.record_embeddings WHERE record_id = $1", deal
        )
    assert tuple(row) == ("Acme renewal v2", 2)


async def test_a_deleted_record_is_not_enriched(database, enricher):
    call = await insert(database, "call", {"title": "Kick-off"})
    async with database.connection() as connection:
        await connection.execute(
            "UPDATE sophia_core.unified_data_catalog SET deleted_at = now() WHERE id = $1", call
        )
    await enrich_records(database, enricher, VERSION)([upserted(call, "call")])
    async with database.connection() as connection:
        assert not await connection.fetchval(
            "SELECT count(*) FROM sophia_core.record_embeddings WHERE record_id = $1", call
        )


async def test_a_batch_without_a_changed_record_of_a_kind_with_text_needs_no_database(settings, enricher):
    unopened = Database(settings)  # any connection it asked for would be refused
    sink = enrich_records(unopened, enricher, VERSION)
    deleted = Envelope.new(
        "record.deleted", "s/message/e-1", {"id": str(uuid.uuid4()), "kind": "message"}, source="catalog"
    )
    analytics_updated = Envelope.new(
        "analytics.updated",
        "analytics/summaries",
        {"as_of": "2026-01-15T09:30:00+00:00", "deals": 1, "conversations": 0},
        source="catalog",
    )
    await sink([upserted(uuid.uuid4(), "contact"), deleted, analytics_updated])  # nothing to enrich
    with pytest.raises(Unavailable, match="pool is not open"):
        await sink([upserted(uuid.uuid4(), "message")])


async def test_an_unchanged_text_keeps_the_embedding_stored_by_this_model_and_no_other(database, enricher):
    marker = "[" + ",".join(["1"] + ["0"] * 383) + "]"  # no text embeds to this: seen again, it was kept
    kept = await insert(database, "message", {"text": "Renewal is signed, thanks all."})
    other_model = await insert(database, "message", {"text": "Renewal is signed, thanks all."})
    sink = enrich_records(database, enricher, VERSION)
    await sink([upserted(kept, "message"), upserted(other_model, "message")])
    async with database.connection() as connection:
        await connection.execute(
            "UPDATE sophia_core.record_embeddings SET embedding = $2::text::vector, "
            "model_version = CASE WHEN record_id = $1 THEN model_version ELSE 'another-model' END "
            "WHERE record_id = ANY($3::uuid[])",
            kept,
            marker,
            [kept, other_model],
        )
        [kept_row] = await connection.fetch(  # xmin: the transaction that last wrote the row
            "SELECT xmin::text FROM sophia_core.record_embeddings WHERE record_id = $1", kept
        )
    await sink(
        [upserted(kept, "message", "record.reenrich"), upserted(other_model, "message", "record.reenrich")]
    )
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT record_id, model_version, embedding::text = $2 AS marked, xmin::text AS written_by "
            "FROM sophia_core.record_embeddings WHERE record_id = ANY($1::uuid[])",
            [kept, other_model],
            marker,
        )
    assert {row["record_id"]: (row["model_version"], row["marked"]) for row in rows} == {
        kept: (VERSION, True),  # read back, not embedded again
        other_model: (VERSION, False),  # another model's vector: embedded by this one
    }
    written_by = {row["record_id"]: row["written_by"] for row in rows}
    assert written_by[kept] == kept_row["xmin"]  # the same vector of the same text: not written again
