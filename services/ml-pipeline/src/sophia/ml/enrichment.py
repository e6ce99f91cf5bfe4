"""Catalog enrichment: a record of a kind with text (calls, messages, deals) gets its embedding,
labels and sentiment, computed from the text fields its kind names.

Which fields are a kind's text is data (`data/text_fields.json`, or `SOPHIA_ML_TEXT_FIELDS_FILE`):
`"title"` is a top-level string, `"transcript[].text"` the `text` of every item of a list. The
texts are joined with newlines, in the order given; a record without any is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sophia.database.enrichment import Enrichment, RecordText
from sophia.ml import DATA_DIR
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.labels import Classifier
from sophia.ml.sentiment import EmbeddingSentiment

DEFAULT_TEXT_FIELDS = DATA_DIR / "text_fields.json"


def read_text_fields(path: Path) -> dict[str, list[str]]:
    """`{"kind": ["field", "list[].field", ...]}`; a clear `ValueError` for anything else."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the text fields {path}: {error}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(fields, list) and fields and all(isinstance(f, str) and f for f in fields)
        for fields in raw.values()
    ):
        raise ValueError(f"{path}: expected an object of kind -> non-empty list of field paths")
    return raw


def record_text(data: dict[str, Any], fields: Sequence[str]) -> str:
    """The record's text: each field's strings, in order, one per line."""
    parts: list[str] = []
    for field in fields:
        name, _, item_field = field.partition("[].")
        value = data.get(name)
        if item_field and isinstance(value, list):
            parts += [
                str(item[item_field]) for item in value if isinstance(item, dict) and item.get(item_field)
            ]
        elif not item_field and isinstance(value, str) and value.strip():
            parts.append(value)
    return "\n".join(parts)


@dataclass(frozen=True)
class Enricher:
    """Embeds and labels records' texts (synchronous: the workers call it in a thread)."""

    encoder: SentenceEncoder
    labels: Classifier
    text_fields: dict[str, list[str]]
    sentiment: EmbeddingSentiment | None = None
    """The trained head (None: no sentiment is stored; the head needs the vectors it was trained on)."""

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.text_fields)

    @property
    def versions(self) -> dict[str, str]:
        """The model version of each task's predictions."""
        versions = {"classification": self.labels.version}
        if self.sentiment is not None:
            versions["sentiment"] = self.sentiment.version
        return versions

    def enrich(self, records: Sequence[RecordText]) -> list[Enrichment]:
        """Each record with text: its embedding (the stored one while its text is unchanged, else
        the model's), labels and sentiment. Records without text are left out."""
        texts = {r.id: record_text(r.data, self.text_fields.get(r.kind, ())) for r in records}
        readable = [r for r in records if texts[r.id]]
        if not readable:
            return []
        stored = [r.stored_embedding if r.stored_content == texts[r.id] else None for r in readable]
        changed = [i for i, vector in enumerate(stored) if not vector]
        vectors = np.empty((len(readable), self.encoder.dimension), dtype=np.float32)
        for i, vector in enumerate(stored):
            if vector:
                vectors[i] = vector
        if changed:
            vectors[changed] = self.encoder.encode([texts[readable[i].id] for i in changed], batch_size=16)
        predictions: list[dict[str, dict[str, Any]]] = [
            {"classification": {"labels": labels, "scores": scores}}
            for labels, scores in self.labels.classify(vectors)
        ]
        if self.sentiment is not None:
            for found, sentiment in zip(predictions, self.sentiment.predict(vectors), strict=True):
                found["sentiment"] = {"label": sentiment.label, "scores": sentiment.scores}
        return [
            Enrichment(record.id, record.version, texts[record.id], vector.tolist(), found)
            for record, vector, found in zip(readable, vectors, predictions, strict=True)
        ]
