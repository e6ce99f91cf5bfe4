"""Labels for texts (pricing, competitor mention, churn risk...), two ways, one interface.

**Zero-shot** (`ZeroShotClassifier`): a text gets the labels whose descriptions it is close to.
Each label is described by a few short phrases (configuration as data: `data/labels.json`, or
the file `SOPHIA_ML_LABELS_FILE` names). At load every phrase is embedded once; a text's score for
a label is the mean cosine similarity of its embedding to the label's two closest phrases (one
phrase can be a fluke; all of them dilute a label with varied phrasing). Labels scoring at least
the threshold are the text's labels, best first. This needs no training data, so it is a
baseline: the scores are similarities, not probabilities, and close labels can tie.

**Few-shot** (`LabelHead`): a logistic regression per label over the same embeddings, trained
from labeled examples by `sophia ml train-classifier` (`sophia.ml.train_classifier`): SetFit's
head, without SetFit's contrastive fine-tuning of the encoder (that needs torch). A label is
given from a probability of 0.5.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sophia.ml import DATA_DIR
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.heads import SIGMOID_CURVATURE, LinearHead, fit, sigmoid
from sophia.shared.settings import Settings

DEFAULT_LABELS = DATA_DIR / "labels.json"
DEFAULT_HEAD = DATA_DIR / "classifier_head.npz"
"""The few-shot head for the built-in labels, trained on `data/classifier_labeled.csv`."""
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


Labeled = tuple[list[str], dict[str, float]]
"""A text's labels (best first) and every label's score."""


class Classifier(Protocol):
    """What serves `/api/v1/ml/classify` and the enrichment's `classification` task."""

    @property
    def kind(self) -> str:
        """`zero-shot` or `few-shot`."""
        ...

    @property
    def names(self) -> tuple[str, ...]:
        """The labels it can give."""
        ...

    @property
    def version(self) -> str:
        """The embedding model's version and the classifier's own: predictions carry it."""
        ...

    @property
    def threshold(self) -> float:
        """The score from which a label is given."""
        ...

    def classify(self, embeddings: np.ndarray) -> list[Labeled]:
        """One result per row of unit `embeddings`."""
        ...


def labeled(names: Sequence[str], scores: np.ndarray, threshold: float) -> list[Labeled]:
    """Per row of `scores` [texts, labels]: the labels at or above `threshold`, best first, and
    every label's score (rounded, plain floats: ready for JSON)."""
    found = []
    for row in scores:
        ranked = sorted(zip(names, row.tolist(), strict=True), key=lambda item: -item[1])
        labels = [name for name, score in ranked if score >= threshold]
        found.append((labels, {name: round(score, 4) for name, score in ranked}))
    return found


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Label names and their phrases' unit vectors ([phrases, dim] per label)."""

    names: tuple[str, ...]
    phrase_vectors: tuple[np.ndarray, ...]
    threshold: float
    version: str
    kind = "zero-shot"

    @classmethod
    def build(
        cls, encoder: SentenceEncoder, labels: dict[str, list[str]], threshold: float, model_version: str
    ) -> ZeroShotClassifier:
        """Embed every phrase once. The version names the label set and threshold too: editing
        either changes what the classifier says."""
        digest = hashlib.blake2b(json.dumps([labels, threshold]).encode(), digest_size=4).hexdigest()
        vectors = tuple(encoder.encode(phrases) for phrases in labels.values())
        return cls(tuple(labels), vectors, threshold, f"{model_version}+zero-shot-{digest}")

    @classmethod
    def from_settings(
        cls, encoder: SentenceEncoder, settings: Settings, model_version: str
    ) -> ZeroShotClassifier:
        """On `SOPHIA_ML_LABELS_FILE`'s labels (else the built-in set) and threshold."""
        labels = read_labels(settings.ml_labels_file or DEFAULT_LABELS)
        return cls.build(encoder, labels, settings.ml_label_threshold, model_version)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """[texts, labels]: each label's score for each text (unit vectors in, cosine out)."""
        columns = []
        for vectors in self.phrase_vectors:
            similarity = embeddings @ vectors.T  # [texts, phrases]
            closest = np.sort(similarity, axis=1)[:, -min(CLOSEST, vectors.shape[0]) :]
            columns.append(closest.mean(axis=1))
        return np.stack(columns, axis=1)

    def classify(self, embeddings: np.ndarray) -> list[Labeled]:
        """Per text: its labels (score >= threshold, best first) and every label's score."""
        return labeled(self.names, self.scores(embeddings), self.threshold)


@dataclass(frozen=True)
class LabelHead(LinearHead):
    """A sigmoid per label over sentence embeddings: each label's probability on its own."""

    FILE_KIND = "labels"
    link = staticmethod(sigmoid)
    threshold = 0.5
    kind = "few-shot"

    @property
    def names(self) -> tuple[str, ...]:
        return self.labels

    def classify(self, embeddings: np.ndarray) -> list[Labeled]:
        """Per text: its labels (probability >= 0.5, best first) and every label's probability."""
        return labeled(self.labels, self.probabilities(embeddings), self.threshold)


def train_label_head(
    embeddings: np.ndarray,
    label_sets: Sequence[Collection[str]],
    names: tuple[str, ...],
    model_version: str,
    *,
    l2: float,
) -> LabelHead:
    """Fit one logistic regression per label (`sophia.ml.heads.fit`; deterministic). A text may
    carry any number of `names`, none included.

    Each label's positives and negatives weigh half of the loss each (scikit-learn's "balanced"
    class weights): a label on a sixth of the texts is otherwise learned as "mostly no", and its
    recall suffers (on the committed set, held-out micro-F1 0.72 unweighted, 0.77 weighted)."""
    targets = np.array([[name in found for name in names] for found in label_sets], dtype=np.float64)
    share = np.clip(targets.mean(axis=0), 1 / len(targets), 1 - 1 / len(targets))  # no empty class
    balanced = np.where(targets > 0, 0.5 / share, 0.5 / (1 - share))
    weights, bias = fit(embeddings, targets, sigmoid, SIGMOID_CURVATURE, l2=l2, sample_weights=balanced)
    return LabelHead(weights=weights, bias=bias, labels=names, model_version=model_version)
