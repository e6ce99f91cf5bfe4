"""Which text a record gives the models, and what the enricher makes of it (a real model)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from sophia.database.enrichment import RecordText
from sophia.ml.embeddings import model_version
from sophia.ml.enrichment import DEFAULT_TEXT_FIELDS, Enricher, read_text_fields, record_text
from sophia.ml.labels import DEFAULT_LABELS, ZeroShotClassifier, read_labels

CALL = {
    "title": "Acme / Sophia: renewal",
    "transcript": [
        {"speaker": "Ana", "text": "Thanks for joining."},
        {"speaker": "Bo", "text": "The sync keeps failing since Monday."},
        {"speaker": "Ana"},  # a turn without text
    ],
}


def test_a_records_text_follows_its_kinds_fields_in_order():
    fields = read_text_fields(DEFAULT_TEXT_FIELDS)
    assert record_text(CALL, fields["call"]) == (
        "Acme / Sophia: renewal\nThanks for joining.\nThe sync keeps failing since Monday."
    )
    assert record_text({"text": "Deal signed!", "user": "u1"}, fields["message"]) == "Deal signed!"
    assert (
        record_text({"dealname": "Acme - Platform", "amount": "12.00"}, fields["deal"]) == "Acme - Platform"
    )
    assert record_text({"dealname": "  ", "notes": 3}, fields["deal"]) == ""


def test_a_broken_text_fields_file_is_a_clear_error(tmp_path):
    path = tmp_path / "fields.json"
    path.write_text('{"call": []}')
    with pytest.raises(ValueError, match="non-empty list"):
        read_text_fields(path)


@pytest.fixture(scope="module")
def enricher(sentence_encoder) -> Enricher:
    encoder = sentence_encoder
    labels = ZeroShotClassifier.build(
        encoder, read_labels(DEFAULT_LABELS), 0.3, model_version(quantized=True)
    )
    return Enricher(encoder, labels, read_text_fields(DEFAULT_TEXT_FIELDS))


def test_the_enricher_embeds_and_labels_records_with_text_and_skips_the_rest(enricher):
    call = RecordText(uuid.uuid4(), "call", 3, CALL)
    empty = RecordText(uuid.uuid4(), "message", 1, {"user": "u1"})
    [result] = enricher.enrich([call, empty])
    assert (result.record_id, result.record_version) == (call.id, 3)
    assert result.content.endswith("failing since Monday.")
    assert np.isclose(np.linalg.norm(result.embedding), 1.0, atol=1e-5)
    assert len(result.embedding) == 384
    assert result.predictions["classification"]["labels"][0] == "support_issue"
    assert enricher.kinds == {"call", "message", "deal"}


def test_a_missing_text_fields_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the text fields"):
        read_text_fields(tmp_path / "absent.json")


def test_a_text_already_embedded_by_this_model_is_not_embedded_again(enricher):
    text = "The sync keeps failing since Monday."
    stored = [0.0] * 384
    stored[7] = 1.0  # no text embeds to this: seeing it back means it was reused
    unchanged = RecordText(uuid.uuid4(), "message", 2, {"text": text}, text, stored)
    edited = RecordText(uuid.uuid4(), "message", 3, {"text": text + " Still."}, text, stored)
    never = RecordText(uuid.uuid4(), "message", 1, {"text": text})
    reused, embedded, first = enricher.enrich([unchanged, edited, never])
    assert list(reused.embedding) == stored
    [(labels, scores)] = enricher.labels.classify(np.array([stored], dtype=np.float32))
    assert reused.predictions["classification"] == {"labels": labels, "scores": scores}  # from it
    for result in (embedded, first):
        assert np.isclose(np.linalg.norm(result.embedding), 1.0, atol=1e-5)
        assert result.embedding[7] != 1.0
    assert np.allclose(first.embedding, enricher.encoder.encode([text])[0], atol=1e-5)
