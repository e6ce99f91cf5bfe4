"""The sentence encoder against the reference model: every text's embedding matches the vectors
sentence-transformers computed (tests/reference), whatever the batch, on the int8 graph we ship."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sophia.ml.batching import Abandoned
from sophia.ml.encoder import ModelFiles, SentenceEncoder, ensure_onnx_model

REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return json.loads((REFERENCE / "reference_texts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    return np.load(REFERENCE / "reference_vectors.npy")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A directory of this module's own, for the test of the build itself."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def encoder(sentence_encoder) -> SentenceEncoder:
    return sentence_encoder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_matches_the_reference(encoder: SentenceEncoder, texts: list[str], reference: np.ndarray) -> None:
    found = encoder.encode(texts, batch_size=16)
    assert found.shape == reference.shape == (len(texts), 384)
    similarity = cosines(found, reference)
    assert similarity.min() >= 0.99, texts[int(similarity.argmin())]
    assert similarity.mean() >= 0.999
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)


def test_the_int8_graph_matches_the_reference_model_on_a_fifth_of_the_texts(encoder, texts, reference):
    assert_matches_the_reference(encoder, texts[::5], reference[::5])


@pytest.mark.load  # every text: 1 s more of the fast tier's two cores
def test_the_int8_graph_matches_the_reference_model_on_every_text(encoder, texts, reference):
    assert_matches_the_reference(encoder, texts, reference)


@pytest.mark.load  # builds the fp32 graph: the model-heavy checks run in the load tier
def test_the_fp32_graph_matches_it_to_rounding(models_dir, texts, reference):
    exact = SentenceEncoder.create(models_dir, threads=1, quantized=False)
    assert cosines(exact.encode(texts[:40]), reference[:40]).min() >= 0.99999


def test_a_texts_embedding_does_not_depend_on_its_batch(encoder, texts):
    sample = texts[:24]
    batched = encoder.encode(sample, batch_size=24)
    alone = np.stack([encoder.encode([text])[0] for text in sample])
    assert cosines(batched, alone).min() >= 0.99999
    assert cosines(encoder.encode(sample[::-1])[::-1], batched).min() >= 0.99999  # input order kept


@pytest.mark.e2e  # a whole build of the graph: 0.8 s of a core
def test_the_graph_is_built_once_and_reused(model_cache):
    files = ModelFiles.from_package()
    first = ensure_onnx_model(files, model_cache, quantized=True)
    built_at = first.stat().st_mtime_ns
    assert ensure_onnx_model(files, model_cache, quantized=True) == first
    assert first.stat().st_mtime_ns == built_at
    assert not list(model_cache.glob("*.tmp"))  # nothing half-written left behind


def test_an_encoding_nobody_wants_any_more_stops_between_batches(encoder, texts):
    asked: list[int] = []

    def wanted(done: int) -> bool:
        asked.append(done)
        return len(asked) < 2  # the second batch is the last one wanted

    with pytest.raises(Abandoned) as stopped:
        encoder.encode(texts[:10], batch_size=4, wanted=wanted)
    assert stopped.value.done == 8  # two batches of four computed, the third never started
    assert asked == [4, 8]  # asked before the second and the third (with what was done), not before the first
    assert encoder.encode(texts[:10], batch_size=4, wanted=lambda done: True).shape == (10, encoder.dimension)
