"""Label sets are data: the built-in one reads, a broken file says what is wrong with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sophia.ml.labels import DEFAULT_LABELS, ZeroShotClassifier, read_labels


def test_the_built_in_label_set_has_the_plans_labels():
    labels = read_labels(DEFAULT_LABELS)
    assert set(labels) == {
        "pricing",
        "competitor_mention",
        "churn_risk",
        "expansion",
        "support_issue",
        "scheduling",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read"),
        ("[]", "expected an object"),
        ('{"pricing": []}', "non-empty list"),
        ('{"pricing": ["", "x"]}', "non-empty list"),
    ],
)
def test_a_broken_label_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_labels(path)


def test_scores_average_each_labels_closest_phrases_and_the_threshold_picks_labels():
    unit = np.eye(3, dtype=np.float32)
    classifier = ZeroShotClassifier(
        names=("a", "b"),
        phrase_vectors=(unit[[0, 1]], unit[[2]]),  # "a": two phrases, "b": one
        threshold=0.4,
        version="test",
    )
    text = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    assert np.allclose(classifier.scores(text), [[0.3, 0.8]])  # a: mean(0.6, 0.0); b: 0.8
    [(labels, scores)] = classifier.classify(text)
    assert labels == ["b"]
    assert list(scores) == ["b", "a"]
    assert json.dumps(scores)  # plain floats, ready for JSON
