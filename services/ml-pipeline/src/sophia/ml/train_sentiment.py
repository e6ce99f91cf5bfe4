"""Train the sentiment head and compare it with VADER: ``uv run python -m sophia.ml.train_sentiment``.

Embeds the train split of ``data/sentiment_labeled.csv``, picks the L2 strength by 5-fold
cross-validation on that split alone, fits the head on all of it, writes ``data/sentiment_head.npz``
and prints accuracy, macro-F1 and the confusion matrix of both models on the test split, which
nothing above has seen. Deterministic: the same data and encoder give the same file and numbers.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sophia.ml import DATA_DIR
from sophia.ml.embeddings import model_version as embedding_version
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.heads import FOLDS, choose_l2
from sophia.ml.sentiment import HEAD_PATH, LABELS, VaderSentiment, train
from sophia.shared.settings import Settings

DATASET_PATH = DATA_DIR / "sentiment_labeled.csv"
L2_CANDIDATES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


@dataclass(frozen=True, slots=True)
class LabeledText:
    """One row of the labeled set."""

    text: str
    label: str
    split: str  # "train" or "test"


@dataclass(frozen=True)
class Evaluation:
    """Accuracy, macro-F1 (the unweighted mean of each label's F1) and the confusion matrix."""

    labels: tuple[str, ...]
    accuracy: float
    macro_f1: float
    confusion: np.ndarray  # int [true label, predicted label]


def read_dataset(path: Path = DATASET_PATH) -> list[LabeledText]:
    """The CSV's rows (columns text, label, split)."""
    with path.open(encoding="utf-8", newline="") as file:
        return [LabeledText(row["text"], row["label"], row["split"]) for row in csv.DictReader(file)]


def evaluate(truth: Sequence[str], predicted: Sequence[str], labels: tuple[str, ...] = LABELS) -> Evaluation:
    """Score ``predicted`` against ``truth``; a label never predicted nor true scores F1 0."""
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true_label, predicted_label in zip(truth, predicted, strict=True):
        confusion[labels.index(true_label), labels.index(predicted_label)] += 1
    hits = np.diag(confusion)
    denominators = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2tp + fp + fn
    f1 = np.divide(2 * hits, denominators, out=np.zeros(len(labels)), where=denominators > 0)
    return Evaluation(labels, float(hits.sum() / confusion.sum()), float(f1.mean()), confusion)


def format_evaluation(name: str, evaluation: Evaluation) -> str:
    """A few lines for the terminal: the scores, then the confusion matrix (rows: true labels)."""
    width = max(len(label) for label in evaluation.labels) + 2
    header = "true \\ predicted".ljust(18) + "".join(label.rjust(width) for label in evaluation.labels)
    rows = [
        label.ljust(18) + "".join(str(count).rjust(width) for count in counts)
        for label, counts in zip(evaluation.labels, evaluation.confusion, strict=True)
    ]
    low, high = wilson_interval(int(np.trace(evaluation.confusion)), int(evaluation.confusion.sum()))
    scores = (
        f"{name}: accuracy {evaluation.accuracy:.3f} (95% interval {low:.3f}-{high:.3f}),"
        f" macro-F1 {evaluation.macro_f1:.3f}"
    )
    return "\n".join([scores, header, *rows])


def wilson_interval(hits: int, count: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval of a proportion: how far a test set this small pins an accuracy down."""
    share = hits / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half_width = z * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return float(centre - half_width), float(centre + half_width)


def cross_validated_accuracy(
    embeddings: np.ndarray, labels: Sequence[str], l2: float, model_version: str
) -> float:
    """Mean accuracy over `FOLDS` folds, each label's rows dealt to the folds in turn (stratified)."""
    fold_of = np.zeros(len(labels), dtype=np.int64)
    for label in LABELS:
        rows = [index for index, value in enumerate(labels) if value == label]
        fold_of[rows] = np.arange(len(rows)) % FOLDS
    accuracies = []
    for fold in range(FOLDS):
        held_out = fold_of == fold
        kept = [label for label, out in zip(labels, held_out, strict=True) if not out]
        head = train(embeddings[~held_out], kept, model_version, l2=l2)
        predicted = [prediction.label for prediction in head.predict(embeddings[held_out])]
        truth = [label for label, out in zip(labels, held_out, strict=True) if out]
        accuracies.append(evaluate(truth, predicted).accuracy)
    return float(np.mean(accuracies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET_PATH)
    parser.add_argument("--output", type=Path, default=HEAD_PATH)
    parser.add_argument(
        "--models-dir", type=Path, default=Settings().data_dir / "models", help="where the graph is built"
    )
    arguments = parser.parse_args()
    started = time.perf_counter()

    rows = read_dataset(arguments.dataset)
    train_rows = [row for row in rows if row.split == "train"]
    test_rows = [row for row in rows if row.split == "test"]
    print(f"dataset: {len(train_rows)} train, {len(test_rows)} test rows from {arguments.dataset.name}")

    version = embedding_version(quantized=True)  # what sophia.ml.models serves by default
    print(f"building the encoder ({version})...")
    encoder = SentenceEncoder.create(arguments.models_dir)
    print(f"embedding {len(rows)} texts...")
    train_embeddings = encoder.encode([row.text for row in train_rows])
    test_embeddings = encoder.encode([row.text for row in test_rows])
    train_labels = [row.label for row in train_rows]

    print(f"choosing L2 by {FOLDS}-fold cross-validation on the train split:")
    best_l2, _ = choose_l2(
        L2_CANDIDATES,
        lambda l2: cross_validated_accuracy(train_embeddings, train_labels, l2, version),
        lambda l2, score: print(f"  l2={l2:g}: accuracy {score:.3f}"),
    )
    print(f"training on all {len(train_rows)} train rows with l2={best_l2:g}...")
    head = train(train_embeddings, train_labels, version, l2=best_l2)
    head.save(arguments.output)
    print(f"wrote {arguments.output} ({head.version})")

    truth = [row.label for row in test_rows]
    vader = VaderSentiment().predict([row.text for row in test_rows])
    print(f"\ntest split, {len(test_rows)} rows:")
    print(format_evaluation("VADER (baseline)", evaluate(truth, [prediction.label for prediction in vader])))
    print()
    predicted = [prediction.label for prediction in head.predict(test_embeddings)]
    print(format_evaluation("embedding head", evaluate(truth, predicted)))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
