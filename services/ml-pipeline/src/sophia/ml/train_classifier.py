"""Train a few-shot label head from a labeled CSV (`sophia ml train-classifier FILE`).

The CSV has a `text` column and a `labels` column: zero or more label names separated by `;`
(empty: none applies). An optional `split` column (`train`/`test`) fixes which rows are held out;
without it a stable share of rows is (chosen by a hash of the text, so the same file always
splits the same way). Training reads only the train rows: it embeds them, picks the L2 strength
by cross-validation on them, and fits a logistic regression per label (`LabelHead`). The held-out
rows then score the head, and the zero-shot classifier beside it on the labels both know, per
label and overall. Deterministic: the same file and encoder give the same head and figures.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sophia.ml import DATA_DIR
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.heads import FOLDS, choose_l2
from sophia.ml.labels import Classifier, LabelHead, train_label_head

EXAMPLE_DATASET = DATA_DIR / "classifier_labeled.csv"
L2_CANDIDATES = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)
MIN_EXAMPLES = 4
"""Train rows a label needs (it must be seen in several folds of the cross-validation)."""
SPLITS = ("train", "test")


@dataclass(frozen=True, slots=True)
class LabeledText:
    """One row of a labeled CSV: the text, the labels it carries (maybe none), its split."""

    text: str
    labels: frozenset[str]
    split: str


@dataclass(frozen=True)
class LabelScore:
    """How one label fared on the held-out rows."""

    label: str
    support: int  # held-out rows that carry it
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Scores:
    """Per label, and over all: micro-F1 (every decision counted once), macro-F1 (the mean of the
    labels' F1) and exact match (rows whose whole label set was right)."""

    labels: tuple[LabelScore, ...]
    micro_f1: float
    macro_f1: float
    exact_match: float


@dataclass(frozen=True)
class Training:
    """What `train` did: the head, the split sizes, the L2 chosen and the held-out scores."""

    head: LabelHead
    train_rows: int
    test_rows: int
    cross_validated: dict[float, float]  # l2 -> mean micro-F1 over the folds
    l2: float
    head_scores: Scores | None  # None without held-out rows
    zero_shot_scores: Scores | None  # None without held-out rows or a zero-shot classifier


def read_labeled(path: Path, holdout: float = 0.2) -> list[LabeledText]:
    """The rows of a labeled CSV; a `ValueError` naming the line for anything malformed."""
    if not 0 <= holdout < 1:
        raise ValueError("the held-out share must be at least 0 and below 1")
    try:
        with path.open(encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            columns = set(reader.fieldnames or ())
            if not {"text", "labels"} <= columns:
                raise ValueError(f"{path}: needs the columns text and labels (found: {sorted(columns)})")
            rows = [_row(path, reader.line_num, raw, holdout) for raw in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _row(path: Path, line: int, raw: dict[str, str | None], holdout: float) -> LabeledText:
    text, labels = (raw.get("text") or "").strip(), raw.get("labels")
    if not text or labels is None:
        raise ValueError(f"{path}, line {line}: a row needs a text and a labels cell")
    split = (raw.get("split") or "").strip()
    if not split:  # stable: a hash of the text, not a random draw
        digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        split = "test" if digest / 2**64 < holdout else "train"
    if split not in SPLITS:
        raise ValueError(f"{path}, line {line}: split is {split!r}, not train or test")
    if "\x00" in labels:  # a label is stored in PostgreSQL's jsonb with each prediction: never a NUL
        raise ValueError(f"{path}, line {line}: a label holds a NUL character")
    return LabeledText(text, frozenset(name.strip() for name in labels.split(";") if name.strip()), split)


def score(
    truth: Sequence[frozenset[str]], predicted: Sequence[frozenset[str]], names: Sequence[str]
) -> Scores:
    """Precision, recall and F1 per label (0 where undefined), micro- and macro-F1, exact match."""
    per_label, totals = [], np.zeros(3)
    for name in names:
        counts = np.array(
            [
                sum(name in t and name in p for t, p in zip(truth, predicted, strict=True)),  # true positives
                sum(name not in t and name in p for t, p in zip(truth, predicted, strict=True)),  # false +
                sum(name in t and name not in p for t, p in zip(truth, predicted, strict=True)),  # false -
            ]
        )
        totals += counts
        per_label.append(_label_score(name, *counts))
    overall = _label_score("", *totals)
    exact = sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)
    macro = float(np.mean([label.f1 for label in per_label]))
    return Scores(tuple(per_label), overall.f1, macro, exact)


def _label_score(name: str, hits: float, false_positives: float, false_negatives: float) -> LabelScore:
    def share(part: float, whole: float) -> float:
        return float(part / whole) if whole else 0.0

    return LabelScore(
        name,
        int(hits + false_negatives),
        share(hits, hits + false_positives),
        share(hits, hits + false_negatives),
        share(2 * hits, 2 * hits + false_positives + false_negatives),
    )


def predicted_sets(classifier: Classifier, embeddings: np.ndarray) -> list[frozenset[str]]:
    return [frozenset(found) for found, _ in classifier.classify(embeddings)]


def cross_validate(
    embeddings: np.ndarray, label_sets: list[frozenset[str]], names: tuple[str, ...], l2: float
) -> float:
    """Mean micro-F1 over `FOLDS` folds (rows dealt to the folds in turn: deterministic)."""
    fold_of = np.arange(len(label_sets)) % FOLDS
    results = []
    for fold in range(FOLDS):
        held_out = fold_of == fold
        kept = [found for found, out in zip(label_sets, held_out, strict=True) if not out]
        head = train_label_head(embeddings[~held_out], kept, names, "cv", l2=l2)
        truth = [found for found, out in zip(label_sets, held_out, strict=True) if out]
        results.append(score(truth, predicted_sets(head, embeddings[held_out]), names).micro_f1)
    return float(np.mean(results))


def train(
    rows: Sequence[LabeledText],
    encoder: SentenceEncoder,
    model_version: str,
    *,
    zero_shot: Classifier | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Training:
    """Fit the head on the train rows and score it (and `zero_shot`) on the test rows."""
    train_rows = [row for row in rows if row.split == "train"]
    test_rows = [row for row in rows if row.split == "test"]
    names = tuple(sorted({name for row in train_rows for name in row.labels}))
    counts = {name: sum(name in row.labels for row in train_rows) for name in names}
    too_few = sorted(name for name, count in counts.items() if count < MIN_EXAMPLES)
    if not names or too_few:
        raise ValueError(
            f"every label needs at least {MIN_EXAMPLES} train rows; "
            + (f"too few: {', '.join(f'{n} ({counts[n]})' for n in too_few)}" if too_few else "no labels")
        )
    unseen = sorted({name for row in test_rows for name in row.labels} - set(names))
    if unseen:
        raise ValueError(f"labels only in the test rows, never trained: {', '.join(unseen)}")
    if len(train_rows) < 2 * FOLDS:
        raise ValueError(f"{len(train_rows)} train rows: cross-validation needs at least {2 * FOLDS}")

    progress(f"embedding {len(train_rows)} train and {len(test_rows)} test texts ({model_version})")
    train_embeddings = encoder.encode([row.text for row in train_rows])
    label_sets = [row.labels for row in train_rows]
    best, cross_validated = choose_l2(
        L2_CANDIDATES,
        lambda l2: cross_validate(train_embeddings, label_sets, names, l2),
        lambda l2, score: progress(f"l2={l2:g}: cross-validated micro-F1 {score:.3f}"),
    )
    progress(f"fitting {len(names)} labels on {len(train_rows)} rows with l2={best:g}")
    head = train_label_head(train_embeddings, label_sets, names, model_version, l2=best)

    head_scores = zero_shot_scores = None
    if test_rows:
        test_embeddings = encoder.encode([row.text for row in test_rows])
        truth = [row.labels for row in test_rows]
        head_scores = score(truth, predicted_sets(head, test_embeddings), names)
        if zero_shot is not None:  # on the labels both know; the others would only count against it
            shared = [name for name in names if name in zero_shot.names]
            if shared:
                predicted = predicted_sets(zero_shot, test_embeddings)
                zero_shot_scores = score(
                    [found & set(shared) for found in truth],
                    [found & set(shared) for found in predicted],
                    shared,
                )
    return Training(
        head, len(train_rows), len(test_rows), cross_validated, best, head_scores, zero_shot_scores
    )
