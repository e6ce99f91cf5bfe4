"""Zero-shot classification: a text gets the labels whose descriptions it is close to.

Each label is described by a few short phrases (configuration as data: `data/labels.json`, or
the file `SOPHIA_ML_LABELS_FILE` names). At load every phrase is embedded once; a text's score for
a label is the mean cosine similarity of its embedding to the label's two closest phrases (one
phrase can be a fluke; all of them dilute a label with varied phrasing). Labels scoring at least
the threshold are the text's labels, best first. This needs no training data, so it is a
baseline: the scores are similarities, not probabilities, and close labels can tie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sophia.ml.encoder import SentenceEncoder

DEFAULT_LABELS = Path(__file__).parent / "data" / "labels.json"
CLOSEST = 2
"""How many of a label's closest phrases its score averages."""


def read_labels(path: Path) -> dict[str, list[str]]:
    """`{"label": ["phrase", ...], ...}`; a clear `ValueError` for anything else."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the label set {path}: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected an object of label -> list of descriptions")
    for name, phrases in raw.items():
        if not (isinstance(phrases, list) and phrases and all(isinstance(p, str) and p for p in phrases)):
            raise ValueError(f"{path}: label {name!r} needs a non-empty list of non-empty descriptions")
    return raw


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Label names and their phrases' unit vectors ([phrases, dim] per label)."""

    names: tuple[str, ...]
    phrase_vectors: tuple[np.ndarray, ...]
    threshold: float

    @classmethod
    def build(
        cls, encoder: SentenceEncoder, labels: dict[str, list[str]], threshold: float
    ) -> ZeroShotClassifier:
        return cls(tuple(labels), tuple(encoder.encode(phrases) for phrases in labels.values()), threshold)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """[texts, labels]: each label's score for each text (unit vectors in, cosine out)."""
        columns = []
        for vectors in self.phrase_vectors:
            similarity = embeddings @ vectors.T  # [texts, phrases]
            closest = np.sort(similarity, axis=1)[:, -min(CLOSEST, vectors.shape[0]) :]
            columns.append(closest.mean(axis=1))
        return np.stack(columns, axis=1)

    def classify(self, embeddings: np.ndarray) -> list[tuple[list[str], dict[str, float]]]:
        """Per text: its labels (score >= threshold, best first) and every label's score."""
        found = []
        for row in self.scores(embeddings):
            ranked = sorted(zip(self.names, row.tolist(), strict=True), key=lambda item: -item[1])
            labels = [name for name, score in ranked if score >= self.threshold]
            found.append((labels, {name: round(score, 4) for name, score in ranked}))
        return found
