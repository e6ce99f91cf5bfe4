"""`sophia ml train-classifier`: trains on a labeled CSV, reports the held-out scores of the head
and of zero-shot, writes a head the API can serve; a bad file exits 2 saying what is wrong."""

from __future__ import annotations

import csv

import pytest
from cli_results import train_classifier
from typer.testing import CliRunner

from sophia.ml.embeddings import model_version
from sophia.ml.labels import DEFAULT_LABELS, LabelHead, read_labels
from sophia.ml.train_classifier import EXAMPLE_DATASET

runner = CliRunner()


@pytest.mark.e2e  # a whole training run of the CLI: the e2e tier
def test_training_a_head_reports_both_classifiers_and_writes_the_head(tmp_path, ml_data_dir):
    with EXAMPLE_DATASET.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))[::6]  # a sixth of the committed set: enough for each label
    dataset = tmp_path / "labeled.csv"
    with dataset.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, ["text", "labels", "split"])
        writer.writeheader()
        writer.writerows(rows)
    result = train_classifier(ml_data_dir, str(dataset))
    assert result.exit_code == 0, result.output
    written = ml_data_dir / "models" / "classifier_head.npz"
    head = LabelHead.load(written, model_version=model_version(quantized=True))
    assert set(head.names) == set(
        read_labels(DEFAULT_LABELS)
    )  # the committed set's labels are the built-in ones
    tests = sum(row["split"] == "test" for row in rows)
    assert f"held-out rows: {tests} (trained on {len(rows) - tests})" in result.output
    assert "cross-validated micro-F1" in result.output
    assert "few-shot:  micro-F1" in result.output
    assert "zero-shot: micro-F1" in result.output
    assert f"SOPHIA_ML_CLASSIFIER_FILE={written.resolve()}, then restart" in result.output


def test_a_bad_file_exits_2_saying_what_is_wrong(tmp_path, ml_data_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,pricing\n")
    result = train_classifier(ml_data_dir, str(bad))
    assert result.exit_code == 2
    assert "needs the columns text and labels" in result.output
    few = tmp_path / "few.csv"
    few.write_text("text,labels\nWhat does it cost?,pricing\nSee you Monday.,scheduling\n")
    result = train_classifier(ml_data_dir, str(few), "--holdout", "0")
    assert result.exit_code == 2
    assert "every label needs at least 4 train rows" in result.output
    assert not (ml_data_dir / "models" / "classifier_head.npz").exists()


def test_with_nothing_held_out_the_head_is_written_unscored(tmp_path, ml_data_dir):
    dataset = tmp_path / "all_train.csv"
    lines = [f"Quote {i} came in over budget,pricing" for i in range(5)]
    lines += [f"Can we meet on day {i}?,scheduling" for i in range(5)]
    dataset.write_text("text,labels\n" + "\n".join(lines) + "\n")
    result = train_classifier(ml_data_dir, str(dataset), "--holdout", "0", "-o", str(tmp_path / "h.npz"))
    assert result.exit_code == 0, result.output
    assert "no held-out rows: the head is not scored" in result.output
    assert LabelHead.load(tmp_path / "h.npz").names == ("pricing", "scheduling")


def test_labels_zero_shot_does_not_know_are_scored_for_the_head_alone(tmp_path, ml_data_dir):
    dataset = tmp_path / "own_labels.csv"
    rows = [f"Book flight {i} to Berlin,travel,train" for i in range(5)]
    rows += [f"Hotel invoice {i} is attached,expenses,train" for i in range(5)]
    rows += ["Please book me a flight to Paris,travel,test", "Receipt for the taxi attached,expenses,test"]
    dataset.write_text("text,labels,split\n" + "\n".join(rows) + "\n")
    result = train_classifier(ml_data_dir, str(dataset), "-o", str(tmp_path / "h.npz"))
    assert result.exit_code == 0, result.output
    assert "few-shot:  micro-F1" in result.output
    assert "zero-shot:" not in result.output  # no label in common with the built-in set


def test_a_head_that_cannot_be_written_exits_2_saying_why(tmp_path, ml_data_dir):
    dataset = tmp_path / "ok.csv"
    lines = [f"Quote {i} came in over budget,pricing" for i in range(5)]
    lines += [f"Can we meet on day {i}?,scheduling" for i in range(5)]
    dataset.write_text("text,labels\n" + "\n".join(lines) + "\n")
    (tmp_path / "taken").mkdir()
    result = train_classifier(ml_data_dir, str(dataset), "--holdout", "0", "-o", str(tmp_path / "taken"))
    assert result.exit_code == 2
    assert "taken" in result.output
    assert list((tmp_path / "taken").iterdir()) == []  # nothing half-written left beside it
