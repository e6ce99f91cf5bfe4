"""`sophia ml`: train the models Sophia can learn from your own labeled data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from sophia.shared.settings import Settings, available_cpus

if TYPE_CHECKING:
    from sophia.ml.train_classifier import Scores, Training

app = typer.Typer(help="Train models on your own labeled data.", no_args_is_help=True)
console = Console()


@app.command("train-classifier")
def train_classifier_command(
    file: Path = typer.Argument(
        ...,
        help="CSV with columns text, labels (';'-separated, empty: none) and optionally split (train/test).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where the head goes [default: <SOPHIA_DATA_DIR>/models/classifier_head.npz].",
    ),
    holdout: float = typer.Option(
        0.2,
        "--holdout",
        min=0.0,
        max=0.9,
        help="Share of rows held out for scoring when there is no split column.",
    ),
) -> None:
    """Train a few-shot label head (a logistic regression per label over the embeddings), score it
    against zero-shot on the held-out rows, and write it for SOPHIA_ML_CLASSIFIER_FILE."""
    # the models' code (numpy, onnxruntime) loads here, not with every `sophia` command
    from sophia.ml.embeddings import model_version
    from sophia.ml.encoder import SentenceEncoder
    from sophia.ml.labels import ZeroShotClassifier
    from sophia.ml.train_classifier import read_labeled, train

    settings = Settings()
    output = output or settings.data_dir / "models" / "classifier_head.npz"
    try:
        rows = read_labeled(file, holdout)
        _check_writable(output)  # before the training's minutes, not after
        version = model_version(settings.ml_quantized)
        console.print(f"building the encoder ({version})...")
        encoder = SentenceEncoder.create(
            settings.data_dir / "models",
            threads=settings.ml_threads or available_cpus(),
            quantized=settings.ml_quantized,
        )
        zero_shot = ZeroShotClassifier.from_settings(encoder, settings, version)  # to compare with
        training = train(rows, encoder, version, zero_shot=zero_shot, progress=console.print)
        output.parent.mkdir(parents=True, exist_ok=True)
        training.head.save(output)
    except (ValueError, OSError) as error:
        console.print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _report(training)
    _plain(f"wrote {output} ({training.head.version})")
    _plain(f"Serve it: SOPHIA_ML_CLASSIFIER_FILE={output.resolve()}, then restart the API and the workers.")


def _check_writable(output: Path) -> None:
    """Before training: `output` can be written as a file (its folders are made only once the head
    is trained, so a run that fails leaves none behind)."""
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a directory: name the file the head goes to")
    if output.exists() and not output.is_file():  # a device or a FIFO: renaming over it would replace it
        raise FileExistsError(f"{output} is not a regular file: name a file for the head")
    existing = next((folder for folder in output.parents if folder.exists()), Path("."))
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is not a directory: the head cannot go under it")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"{existing} is not writable: the head cannot go there")


def _plain(line: str) -> None:
    """As is: no markup, no colours, no wrapping (a path to copy stays whole)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _report(training: Training) -> None:
    if training.head_scores is None:
        console.print("no held-out rows: the head is not scored (add a split column or --holdout)")
        return
    head, zero_shot = training.head_scores, training.zero_shot_scores
    table = Table(title=f"held-out rows: {training.test_rows} (trained on {training.train_rows})")
    table.add_column("label")
    table.add_column("rows", justify="right")
    table.add_column("few-shot P / R / F1", justify="right")
    table.add_column("zero-shot P / R / F1", justify="right")
    zero_by_label = {score.label: score for score in zero_shot.labels} if zero_shot else {}
    for score in head.labels:
        other = zero_by_label.get(score.label)
        table.add_row(
            score.label,
            str(score.support),
            f"{score.precision:.2f} / {score.recall:.2f} / {score.f1:.2f}",
            f"{other.precision:.2f} / {other.recall:.2f} / {other.f1:.2f}" if other else "-",
        )
    console.print(table)
    console.print(f"few-shot:  {_overall(head)}")
    if zero_shot:
        console.print(f"zero-shot: {_overall(zero_shot)} (on the {len(zero_shot.labels)} labels it knows)")


def _overall(scores: Scores) -> str:
    exact = scores.exact_match
    return f"micro-F1 {scores.micro_f1:.3f}, macro-F1 {scores.macro_f1:.3f}, exact match {exact:.3f}"
