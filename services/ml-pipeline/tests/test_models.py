"""The models' holder before it has loaded anything: asking for a model says so."""

from __future__ import annotations

import pytest

from sophia.ml.models import Models


def test_a_model_asked_for_before_loading_is_a_clear_error(settings):
    models = Models(settings, cache=None)  # the cache is only used once loaded
    assert models.ready == {"embeddings": False, "labels": False, "sentiment": False}
    with pytest.raises(RuntimeError, match="the embedding model is not loaded"):
        _ = models.embeddings
    with pytest.raises(RuntimeError, match="the label set is not loaded"):
        _ = models.labels
