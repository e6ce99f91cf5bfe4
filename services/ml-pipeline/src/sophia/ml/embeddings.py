"""Text embeddings served fast: cached per text, computed in dynamic batches on a miss."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from sophia.cache import Entry, TieredCache
from sophia.ml import onnx_graph
from sophia.ml.batching import Batcher
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.predictions import TTL_CLASS, prediction_key

MODEL_ID = "all-MiniLM-L6-v2"
TASK = "embed"
# A dynamic batch holds texts of all lengths; padded as one it wastes 17-22 % of its token slots.
# Sorted by length and run 4 at a time, a text costs 11 % less CPU (docs/benchmarks.md).
SUB_BATCH = 4


def model_version(quantized: bool) -> str:
    """What changes when the vectors would: the runtime's graph, its quantisation and its builder.
    Cached predictions, stored embeddings and trained heads all carry it."""
    return f"onnx-{'int8' if quantized else 'fp32'}-b{onnx_graph.BUILDER_VERSION}"


class EmbeddingModel:
    """`await model.embed(texts, timeout_s=...)`: one float32 vector per text, unit length.

    Each text is looked up in the cache (L1, then Redis); the misses of every concurrent caller
    queue in one batcher and go through the encoder together."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        cache: TieredCache,
        version: str,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        max_queue: int = 4096,
        nice: int = 0,
    ) -> None:
        self.encoder, self.cache, self.version = encoder, cache, version
        self.dimension = encoder.dimension
        self.batcher: Batcher[str, bytes] = Batcher(
            self.compute,
            name="embeddings",
            max_batch=max_batch,
            max_wait_s=max_wait_s,
            max_queue=max_queue,
            nice=nice,
        )

    async def __aenter__(self) -> EmbeddingModel:
        await self.batcher.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.batcher.__aexit__(None, None, None)

    def compute(self, texts: list[str]) -> list[bytes]:
        """The batcher's model call (in its thread): vectors as float32 bytes, ready to cache;
        stopped between sub-batches once nobody waits for them (`Batcher.wanted`)."""
        vectors = self.encoder.encode(texts, batch_size=SUB_BATCH, wanted=self.batcher.wanted)
        return [row.tobytes() for row in vectors]

    async def count_tokens(self, texts: Sequence[str], *, timeout_s: float) -> int:
        """Tokens the model reads of `texts`, counted in the model's thread within `timeout_s`."""
        return await self.batcher.in_model_thread(self.encoder.count_tokens, texts, timeout_s=timeout_s)

    async def embed(self, texts: Sequence[str], *, timeout_s: float) -> np.ndarray:
        """[len(texts), dimension] float32, in the order given.

        The texts not in L1 are admitted to the model together, or the request is refused whole
        before any of them is queued: each text's load is shared with whoever else asks for it,
        so it is not cancelled with this caller, and inputs queued for a request refused part-way
        were computed for nobody (the hostile benchmark's embedding attack cost the API two cores
        so, for answers that were all 503)."""
        keys = [prediction_key(MODEL_ID, self.version, TASK, text) for text in texts]
        known = [self.cache.peek(key) for key in keys]
        missing = {key for key, entry in zip(keys, known, strict=True) if entry is None}

        with self.batcher.reserve(len(missing), timeout_s) as reservation:

            async def one(text: str, key: str, entry: Entry | None) -> bytes:
                if entry is not None:
                    return entry.value

                async def load() -> bytes:
                    [vector] = await self.batcher.submit([text], timeout_s=timeout_s, reservation=reservation)
                    return vector

                return (await self.cache.get_or_load(key, load, TTL_CLASS)).value

            vectors = await asyncio.gather(*map(one, texts, keys, known))
        return np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(texts), self.dimension)
