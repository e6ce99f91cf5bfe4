"""Linear heads over sentence embeddings: weights and a bias trained here, saved as `.npz`.

The sentiment head (one label of three: softmax) and the few-shot label head (any number of
labels at once: a sigmoid per label) are the same thing but for that last function, so they share
the file format, the model-version check and the trainer. A head reads the embeddings the service
computes and caches anyway: a prediction costs one [dimension x labels] matrix product more.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

ZIP_STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the same on every save


class IncompatibleHead(Exception):
    """The head was trained on embeddings of another model version: its scores would be noise."""


@dataclass(frozen=True)
class LinearHead:
    """`link(embeddings @ weights + bias)`, one column per label.

    ``model_version`` names the embeddings it was trained on (``onnx-int8-b1``): another encoder's
    vectors live in another space, so loading checks it. ``KIND`` is written into the file, so a
    sentiment head cannot be loaded as a label head or the other way round.
    """

    KIND: ClassVar[str]

    weights: np.ndarray  # float32 [dimension, labels]
    bias: np.ndarray  # float32 [labels]
    labels: tuple[str, ...]
    model_version: str

    @staticmethod
    def link(logits: np.ndarray) -> np.ndarray:
        """Scores from logits, row by row."""
        raise NotImplementedError

    @property
    def version(self) -> str:
        """The embedding model's version and a digest of the weights: a prediction cache key part."""
        digest = hashlib.blake2b(self.weights.tobytes() + self.bias.tobytes(), digest_size=4).hexdigest()
        return f"{self.model_version}+head-{digest}"

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """float [texts, labels]."""
        return self.link(embeddings.astype(np.float64) @ self.weights + self.bias)

    def save(self, path: Path) -> None:
        """Write an ``.npz`` of kind, W, b, labels and model_version, byte-identical for the same head.

        `np.savez` stamps each member with the time of writing; a fixed stamp means retraining
        on unchanged data leaves a committed file unchanged.
        """
        arrays = {
            "kind": np.array(self.KIND),
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
    def load(cls, path: Path, model_version: str | None = None) -> Self:
        """Read a head written by :meth:`save`: a `ValueError` for any other file,
        `IncompatibleHead` if ``model_version`` is given and differs."""
        try:
            with np.load(path, allow_pickle=False) as data:
                kind = str(data["kind"])
                head = cls(
                    weights=data["W"].astype(np.float32),
                    bias=data["b"].astype(np.float32),
                    labels=tuple(str(label) for label in data["labels"]),
                    model_version=str(data["model_version"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a head written by Sophia: {error}") from None
        if kind != cls.KIND:
            raise ValueError(f"{path} is a {kind} head, not a {cls.KIND} head")
        if model_version is not None and model_version != head.model_version:
            raise IncompatibleHead(
                f"{path.name} was trained on {head.model_version} embeddings, not {model_version}"
            )
        return head


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # no overflow for large logits
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def sigmoid(logits: np.ndarray) -> np.ndarray:
    result: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * logits))  # exact, and no overflow
    return result


SOFTMAX_CURVATURE = 0.5
SIGMOID_CURVATURE = 0.25
"""The largest second derivative of each link's cross-entropy: it bounds the training step."""


def fit(
    embeddings: np.ndarray,
    targets: np.ndarray,
    link: Callable[[np.ndarray], np.ndarray],
    curvature: float,
    *,
    l2: float,
    sample_weights: np.ndarray | None = None,
    max_iterations: int = 5000,
    tolerance: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) minimising mean cross-entropy of ``link`` + ``l2``/2 * |W|^2 (the bias is
    not penalised). ``targets`` is float [texts, labels]: one-hot for softmax, 0/1 for sigmoids.
    ``sample_weights`` (the shape of ``targets``, sigmoids only) weighs each text's error per label.

    The loss is smooth and, with ``l2`` > 0, strongly convex, so Nesterov's accelerated gradient
    descent with its constant step and momentum reaches the one optimum from zeros, full batch,
    with no randomness: the same data gives the same weights. It stops when no gradient entry
    exceeds ``tolerance``.
    """
    if l2 <= 0:
        raise ValueError("l2 must be positive: without it the optimum may be at infinity")
    features = np.hstack([embeddings.astype(np.float64), np.ones((len(embeddings), 1))])  # bias column
    count = len(features)
    penalty = np.ones((features.shape[1], 1))
    penalty[-1] = 0.0  # no penalty on the bias row
    weighing = np.ones_like(targets) if sample_weights is None else sample_weights
    # The Hessian is at most curvature * max weight * X^T X / n (+ l2): its largest eigenvalue
    # bounds the step.
    smoothness = curvature * weighing.max() * np.linalg.norm(features, 2) ** 2 / count + l2
    momentum = (np.sqrt(smoothness / l2) - 1) / (np.sqrt(smoothness / l2) + 1)

    def gradient(parameters: np.ndarray) -> np.ndarray:
        errors = weighing * (link(features @ parameters) - targets)
        result: np.ndarray = features.T @ errors / count + l2 * penalty * parameters
        return result

    parameters = np.zeros((features.shape[1], targets.shape[1]))
    previous = parameters
    for _ in range(max_iterations):
        lookahead = parameters + momentum * (parameters - previous)
        step = gradient(lookahead)
        previous, parameters = parameters, lookahead - step / smoothness
        if np.abs(step).max() < tolerance:
            break
    return parameters[:-1].astype(np.float32), parameters[-1].astype(np.float32)
