"""Sentiment of business texts: a logistic-regression head over MiniLM embeddings, VADER as baseline.

Both label a text negative, neutral or positive. VADER (a published rule-and-lexicon model for
social-media English) needs no training; the head reads the embeddings the service computes and
caches anyway, so a sentiment costs one 384x3 matrix product more than an embedding. The head
was trained on Sophia's labeled set (``data/sentiment_labeled.csv``) by
`sophia.ml.train_sentiment`; docs/ml.md gives both models' accuracy on its held-out split.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

LABELS = ("negative", "neutral", "positive")
DATA_DIR = Path(__file__).parent / "data"
HEAD_PATH = DATA_DIR / "sentiment_head.npz"
"""The committed head, so the service loads weights and never trains."""
ZIP_STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the same on every save


@dataclass(frozen=True, slots=True)
class Prediction:
    """A text's label and a score per label (the scores sum to 1)."""

    label: str
    scores: dict[str, float]


class IncompatibleHead(Exception):
    """The head was trained on embeddings of another model version: its scores would be noise."""


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
class EmbeddingSentiment:
    """Softmax regression over sentence embeddings: ``softmax(embeddings @ weights + bias)``.

    ``model_version`` names the embeddings it was trained on (``onnx-int8-b1``): another
    encoder's vectors live in another space, so loading checks it.
    """

    weights: np.ndarray  # float32 [dimension, labels]
    bias: np.ndarray  # float32 [labels]
    labels: tuple[str, ...]
    model_version: str

    @property
    def version(self) -> str:
        """The embedding model's version and a digest of the weights: a prediction cache key part."""
        digest = hashlib.blake2b(self.weights.tobytes() + self.bias.tobytes(), digest_size=4).hexdigest()
        return f"{self.model_version}+head-{digest}"

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """float [texts, labels], each row summing to 1."""
        return _softmax(embeddings.astype(np.float64) @ self.weights + self.bias)

    def predict(self, embeddings: np.ndarray) -> list[Prediction]:
        """One prediction per row of ``embeddings`` (float [texts, dimension])."""
        return [
            Prediction(
                self.labels[int(row.argmax())],
                {name: float(p) for name, p in zip(self.labels, row, strict=True)},
            )
            for row in self.probabilities(embeddings)
        ]

    def save(self, path: Path) -> None:
        """Write an ``.npz`` of W, b, labels and model_version, byte-identical for the same head.

        `np.savez` stamps each member with the time of writing; a fixed stamp means retraining
        on unchanged data leaves the committed file unchanged.
        """
        arrays = {
            "W": self.weights,
            "b": self.bias,
            "labels": np.array(self.labels),
            "model_version": np.array(self.model_version),
        }
        with zipfile.ZipFile(path, "w") as archive:
            for name, array in arrays.items():
                with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_STAMP), "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    @classmethod
    def load(cls, path: Path = HEAD_PATH, model_version: str | None = None) -> EmbeddingSentiment:
        """Read a head written by :meth:`save`; raise `IncompatibleHead` if ``model_version`` differs."""
        with np.load(path, allow_pickle=False) as data:
            head = cls(
                weights=data["W"].astype(np.float32),
                bias=data["b"].astype(np.float32),
                labels=tuple(str(label) for label in data["labels"]),
                model_version=str(data["model_version"]),
            )
        if model_version is not None and model_version != head.model_version:
            raise IncompatibleHead(
                f"{path.name} was trained on {head.model_version} embeddings, not {model_version}"
            )
        return head


def train(
    embeddings: np.ndarray,
    labels: Sequence[str],
    model_version: str,
    *,
    l2: float = 1e-3,
    max_iterations: int = 5000,
    tolerance: float = 1e-6,
    label_names: tuple[str, ...] = LABELS,
) -> EmbeddingSentiment:
    """Fit the head: minimise mean cross-entropy + ``l2``/2 * |W|^2 (the bias is not penalised).

    The loss is smooth and, with ``l2`` > 0, strongly convex, so Nesterov's accelerated gradient
    descent with its constant step and momentum reaches the one optimum from zeros, full batch,
    with no randomness: the same data gives the same weights. It stops when no gradient entry
    exceeds ``tolerance``.
    """
    if l2 <= 0:
        raise ValueError("l2 must be positive: without it the optimum may be at infinity")
    features = np.hstack([embeddings.astype(np.float64), np.ones((len(embeddings), 1))])  # bias column
    targets = np.eye(len(label_names))[[label_names.index(label) for label in labels]]
    count = len(features)
    penalty = np.ones((features.shape[1], 1))
    penalty[-1] = 0.0  # no penalty on the bias row
    # The softmax Hessian is at most 1/2 X^T X / n (+ l2): its largest eigenvalue bounds the step.
    smoothness = 0.5 * np.linalg.norm(features, 2) ** 2 / count + l2
    momentum = (np.sqrt(smoothness / l2) - 1) / (np.sqrt(smoothness / l2) + 1)

    def gradient(parameters: np.ndarray) -> np.ndarray:
        errors = _softmax(features @ parameters) - targets
        result: np.ndarray = features.T @ errors / count + l2 * penalty * parameters
        return result

    parameters = np.zeros((features.shape[1], len(label_names)))
    previous = parameters
    for _ in range(max_iterations):
        lookahead = parameters + momentum * (parameters - previous)
        step = gradient(lookahead)
        previous, parameters = parameters, lookahead - step / smoothness
        if np.abs(step).max() < tolerance:
            break
    return EmbeddingSentiment(
        weights=parameters[:-1].astype(np.float32),
        bias=parameters[-1].astype(np.float32),
        labels=label_names,
        model_version=model_version,
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # no overflow for large logits
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result
