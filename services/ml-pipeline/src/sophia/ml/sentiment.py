"""Sentiment of business texts: a logistic-regression head over MiniLM embeddings, VADER as baseline.

Both label a text negative, neutral or positive. VADER (a published rule-and-lexicon model for
social-media English) needs no training; the head reads the embeddings the service computes and
caches anyway, so a sentiment costs one 384x3 matrix product more than an embedding (a
`sophia.ml.heads.LinearHead`). The head
was trained on Sophia's labeled set (``data/sentiment_labeled.csv``) by
`sophia.ml.train_sentiment`; docs/ml.md gives both models' accuracy on its held-out split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from sophia.ml import DATA_DIR
from sophia.ml.heads import SOFTMAX_CURVATURE, IncompatibleHead, LinearHead, fit, softmax

__all__ = ["LABELS", "EmbeddingSentiment", "IncompatibleHead", "Prediction", "VaderSentiment", "train"]

LABELS = ("negative", "neutral", "positive")
HEAD_PATH = DATA_DIR / "sentiment_head.npz"
"""The committed head, so the service loads weights and never trains."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """A text's label and a score per label (the scores sum to 1)."""

    label: str
    scores: dict[str, float]


class VaderSentiment:
    """The baseline: VADER's compound score with its authors' thresholds (+-0.05).

    Scores are VADER's shares of negative, neutral and positive wording, not probabilities: a
    text can be mostly neutral words and still be labeled positive by its compound score.
    """

    THRESHOLD = 0.05

    VERSION = "vader-3.3"
    """What predictions by the baseline carry as their model version."""

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text, in order."""
        return [self._predict_one(text) for text in texts]

    def _predict_one(self, text: str) -> Prediction:
        polarity = self._analyzer.polarity_scores(text)
        compound = polarity["compound"]
        label = "neutral"
        if compound >= self.THRESHOLD:
            label = "positive"
        elif compound <= -self.THRESHOLD:
            label = "negative"
        shares = {"negative": polarity["neg"], "neutral": polarity["neu"], "positive": polarity["pos"]}
        if not any(shares.values()):  # an empty text: VADER gives it no shares at all
            shares["neutral"] = 1.0
        total = sum(shares.values())  # VADER rounds its shares to 3 decimals
        return Prediction(label, {name: share / total for name, share in shares.items()})


@dataclass(frozen=True)
class EmbeddingSentiment(LinearHead):
    """Softmax regression over sentence embeddings: ``softmax(embeddings @ weights + bias)``."""

    FILE_KIND = "sentiment"
    link = staticmethod(softmax)

    def predict(self, embeddings: np.ndarray) -> list[Prediction]:
        """One prediction per row of ``embeddings`` (float [texts, dimension])."""
        return [
            Prediction(
                self.labels[int(row.argmax())],
                {name: float(p) for name, p in zip(self.labels, row, strict=True)},
            )
            for row in self.probabilities(embeddings)
        ]

    @classmethod
    def load(cls, path: Path = HEAD_PATH, model_version: str | None = None) -> EmbeddingSentiment:
        """The committed head unless told otherwise (see `LinearHead.load`)."""
        return super().load(path, model_version)


def train(
    embeddings: np.ndarray,
    labels: Sequence[str],
    model_version: str,
    *,
    l2: float = 1e-3,
    label_names: tuple[str, ...] = LABELS,
) -> EmbeddingSentiment:
    """Fit the head (`sophia.ml.heads.fit`: deterministic, the same data gives the same weights)."""
    targets = np.eye(len(label_names))[[label_names.index(label) for label in labels]]
    weights, bias = fit(embeddings, targets, softmax, SOFTMAX_CURVATURE, l2=l2)
    return EmbeddingSentiment(weights=weights, bias=bias, labels=label_names, model_version=model_version)
