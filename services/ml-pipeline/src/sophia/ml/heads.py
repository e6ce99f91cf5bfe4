"""Linear heads over sentence embeddings: weights and a bias trained here, saved as `.npz`.

The sentiment head (one label of three: softmax) and the few-shot label head (any number of
labels at once: a sigmoid per label) are the same thing but for that last function, so they share
the file format, the model-version check and the trainer. A head reads the embeddings the service
computes and caches anyway: a prediction costs one [dimension x labels] matrix product more.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
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
    vectors live in another space, so loading checks it. ``FILE_KIND`` is written into the file, so
    a sentiment head cannot be loaded as a label head or the other way round.
    """

    FILE_KIND: ClassVar[str]

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
        """The embedding model's version and a digest of the head (kind, labels, weights): what
        its predictions carry, so a retrained or relabeled head's are told apart."""
        digest = hashlib.blake2b(digest_size=4)
        digest.update("\x00".join((self.FILE_KIND, *self.labels)).encode())
        digest.update(self.weights.tobytes() + self.bias.tobytes())
        return f"{self.model_version}+head-{digest.hexdigest()}"

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """float [texts, labels]."""
        return self.link(embeddings.astype(np.float64) @ self.weights + self.bias)

    def save(self, path: Path) -> None:
        """Write an ``.npz`` of kind, W, b, labels and model_version, byte-identical for the same head.

        `np.savez` stamps each member with the time of writing; a fixed stamp means retraining
        on unchanged data leaves a committed file unchanged. Written beside ``path`` and renamed
        over it, so a process starting meanwhile reads the old head or the new, never half of one.
        """
        arrays = {
            "kind": np.array(self.FILE_KIND),
            "W": self.weights,
            "b": self.bias,
            "labels": np.array(self.labels),
            "model_version": np.array(self.model_version),
        }
        partial = path.with_name(f".{path.name}.partial")
        try:
            with zipfile.ZipFile(partial, "w") as archive:
                for name, array in arrays.items():
                    with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_STAMP), "w") as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, model_version: str | None = None) -> Self:
        """Read a head written by :meth:`save`: a `ValueError` saying what is wrong for any other
        file, `IncompatibleHead` if ``model_version`` is given and differs."""
        try:
            with np.load(path, allow_pickle=False) as data:
                kind = str(data["kind"])
                head = cls(
                    weights=data["W"].astype(np.float32),
                    bias=data["b"].astype(np.float32),
                    labels=tuple(str(label) for label in data["labels"]),
                    model_version=str(data["model_version"]),
                )
        except FileNotFoundError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a head written by Sophia: {error}") from None
        if kind != cls.FILE_KIND:
            raise ValueError(f"{path} is a {kind} head, not a {cls.FILE_KIND} head")
        if problem := head._malformed():
            raise ValueError(f"{path} is not a usable head: {problem}")
        if model_version is not None and model_version != head.model_version:
            raise IncompatibleHead(
                f"{path.name} was trained on {head.model_version} embeddings, not {model_version}"
            )
        return head

    def _malformed(self) -> str | None:
        """What makes the arrays unusable (they would fail every prediction), or None."""
        weights, bias, labels = self.weights, self.bias, self.labels
        if weights.ndim != 2 or bias.shape != (weights.shape[1],) or len(labels) != weights.shape[1]:
            return f"W {weights.shape}, b {bias.shape} and {len(labels)} labels do not fit together"
        if not all(labels) or len(set(labels)) != len(labels):
            return f"labels must be distinct and non-empty: {list(labels)}"
        if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
            return "W or b holds a NaN or an infinity"
        return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # no overflow for large logits
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def sigmoid(logits: np.ndarray) -> np.ndarray:
    result: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * logits))  # exact, and no overflow
    return result


FOLDS = 5
"""Folds of the cross-validation that picks a head's L2 strength."""


def choose_l2(
    candidates: Sequence[float],
    cross_validated: Callable[[float], float],
    report: Callable[[float, float], None] = lambda l2, score: None,
) -> tuple[float, dict[float, float]]:
    """The candidate with the best cross-validated score, and every candidate's score (each
    reported as it comes). Ties go to the first: list the strongest penalty first."""
    scores: dict[float, float] = {}
    for l2 in candidates:
        scores[l2] = cross_validated(l2)
        report(l2, scores[l2])
    return max(candidates, key=scores.__getitem__), scores


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
