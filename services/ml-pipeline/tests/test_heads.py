"""Linear heads' files and trainer: a file of another kind, for other embeddings, or with arrays
that do not fit together is refused at load with what is wrong; saving never leaves half a file;
the version tells heads apart; fitting needs its penalty and stops at its cap."""

from __future__ import annotations

import numpy as np
import pytest

from sophia.ml.embeddings import model_version
from sophia.ml.heads import SIGMOID_CURVATURE, IncompatibleHead, fit, sigmoid
from sophia.ml.labels import LabelHead
from sophia.ml.sentiment import HEAD_PATH

MODEL_VERSION = model_version(quantized=True)


def head(labels: tuple[str, ...] = ("a", "b"), weights: np.ndarray | None = None, **changes) -> LabelHead:
    weights = (
        np.arange(8 * len(labels), dtype=np.float32).reshape(8, len(labels)) if weights is None else weights
    )
    fields = {"weights": weights, "bias": np.zeros(len(labels), np.float32), "labels": labels}
    return LabelHead(**(fields | changes), model_version=MODEL_VERSION)


def test_a_saved_head_loads_back_the_same_and_replaces_the_old_file_whole(tmp_path):
    path = tmp_path / "head.npz"
    head().save(path)
    head(labels=("c", "d")).save(path)  # over the first
    loaded = LabelHead.load(path, model_version=MODEL_VERSION)
    assert loaded.names == ("c", "d")
    assert np.array_equal(loaded.weights, head().weights)
    assert [item.name for item in tmp_path.iterdir()] == ["head.npz"]  # no partial file beside it


def test_the_version_tells_apart_heads_differing_in_weights_or_labels_only():
    versions = {
        head().version,
        head(labels=("a", "c")).version,
        head(weights=np.ones((8, 2), np.float32)).version,
    }
    assert len(versions) == 3
    assert all(version.startswith(f"{MODEL_VERSION}+head-") for version in versions)
    assert head().version == head().version


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"bias": np.zeros(3, np.float32)}, r"W \(8, 2\), b \(3,\) and 2 labels do not fit together"),
        (
            {
                "labels": ("a", "b", "c"),
                "weights": np.zeros((8, 2), np.float32),
                "bias": np.zeros(2, np.float32),
            },
            "and 3 labels do not fit together",
        ),
        ({"weights": np.zeros(8, np.float32)}, "do not fit together"),
        ({"labels": ("a", "a")}, "labels must be distinct and non-empty"),
        ({"labels": ("a", "")}, "labels must be distinct and non-empty"),
        ({"weights": np.full((8, 2), np.nan, np.float32)}, "NaN or an infinity"),
    ],
)
def test_a_head_whose_arrays_would_fail_every_prediction_is_refused_at_load(tmp_path, broken, message):
    path = tmp_path / "broken.npz"
    head(**broken).save(path)
    with pytest.raises(ValueError, match=message):
        LabelHead.load(path)


def test_a_missing_file_another_kind_or_other_embeddings_are_refused_saying_so(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read .*absent\.npz: No such file"):
        LabelHead.load(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="is a sentiment head, not a labels head"):
        LabelHead.load(HEAD_PATH)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a head written by Sophia"):
        LabelHead.load(tmp_path / "junk.npz")
    LabelHead(np.zeros((384, 1), np.float32), np.zeros(1, np.float32), ("a",), "onnx-fp32-b1").save(
        tmp_path / "fp32.npz"
    )
    with pytest.raises(IncompatibleHead, match="onnx-fp32-b1"):
        LabelHead.load(tmp_path / "fp32.npz", model_version=MODEL_VERSION)


def test_fitting_needs_a_penalty_and_stops_at_its_iteration_cap():
    features = np.array([[1.0, 0.0], [0.0, 1.0]])
    targets = np.array([[1.0], [0.0]])
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit(features, targets, sigmoid, SIGMOID_CURVATURE, l2=0.0)
    capped, _ = fit(features, targets, sigmoid, SIGMOID_CURVATURE, l2=1e-3, max_iterations=1)
    converged, _ = fit(features, targets, sigmoid, SIGMOID_CURVATURE, l2=1e-3)
    assert 0 < capped[0, 0] < converged[0, 0]  # one step toward the optimum, not the optimum
