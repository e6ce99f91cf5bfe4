"""The BERT graph builder: the encoder variants it refuses, and int8 weights in MatMulNBits' layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sophia.ml.onnx_graph import INT8_BLOCK_SIZE, BertConfig, quantize_blockwise_int8

CONFIG = {"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "layer_norm_eps": 1e-12}


def config_dir(tmp_path, **overrides):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG | overrides), encoding="utf-8")
    return tmp_path


def test_a_bert_config_is_read_with_exact_gelu_and_absolute_positions_by_default(tmp_path):
    assert BertConfig.from_model_dir(config_dir(tmp_path)) == BertConfig(8, 2, 1, 1e-12)


@pytest.mark.parametrize(
    ("override", "refusal"),
    [
        ({"hidden_act": "gelu_new"}, "unsupported activation 'gelu_new'"),
        ({"position_embedding_type": "relative_key"}, "only absolute position embeddings"),
    ],
)
def test_an_encoder_this_builder_does_not_implement_is_refused(tmp_path, override, refusal):
    with pytest.raises(ValueError, match=refusal):
        BertConfig.from_model_dir(config_dir(tmp_path, **override))


def test_int8_quantisation_round_trips_within_a_step_and_refuses_a_partial_block():
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((2 * INT8_BLOCK_SIZE, 3)).astype(np.float32)  # [K, N]
    quantized, scales = quantize_blockwise_int8(weight)
    assert quantized.shape == (3, 2, INT8_BLOCK_SIZE)
    restored = (quantized.astype(np.float32) - 128) * scales.reshape(3, 2, 1)
    assert np.abs(restored.reshape(3, -1).T - weight).max() <= np.abs(scales).max() / 2 + 1e-6
    with pytest.raises(ValueError, match=f"K=40 is not a multiple of block size {INT8_BLOCK_SIZE}"):
        quantize_blockwise_int8(weight[:40])
