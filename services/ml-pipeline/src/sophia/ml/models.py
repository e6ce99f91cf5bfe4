"""The models one process serves: loaded concurrently at start, each behind its own batcher.

`async with Models.load(settings, cache) as models:` builds (or reuses) each model's runtime
files under the data directory's `models/`, opens them in worker threads at the same time, and
says which are ready (`models.ready`, what `/readyz` reports). Closing drains every batcher.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

from sophia.cache import TieredCache
from sophia.ml.embeddings import MODEL_ID, EmbeddingModel, model_version
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.heads import IncompatibleHead
from sophia.ml.labels import (
    DEFAULT_HEAD,
    Classifier,
    LabelHead,
    ZeroShotClassifier,
)
from sophia.ml.priority import in_lowered_thread
from sophia.ml.sentiment import EmbeddingSentiment, Prediction, VaderSentiment
from sophia.shared.logging import get_logger
from sophia.shared.settings import Settings

log = get_logger(__name__)


@functools.cache
def opened_encoder(cache_dir: Path, threads: int, quantized: bool, nice: int) -> SentenceEncoder:
    """The process's encoder of one graph and thread count, opened once: its ONNX session is
    immutable and safe to run from several threads, and opening one costs about half a second of
    CPU (an app started again in the same process, as the tests do, takes the same one). Opened in
    a thread `nice` steps down, so the threads ONNX Runtime starts for it run as low."""
    return in_lowered_thread(nice, SentenceEncoder.create, cache_dir, None, threads, quantized)


class Models:
    """What `Models.load` opened: `embeddings` and the readiness of each model by name."""

    def __init__(self, settings: Settings, cache: TieredCache) -> None:
        self.settings, self.cache = settings, cache
        self.ready: dict[str, bool] = {"embeddings": False, "labels": False, "sentiment": False}
        self._stack = AsyncExitStack()
        self._embeddings: EmbeddingModel | None = None
        self._labels: Classifier | None = None
        self.sentiment_head: EmbeddingSentiment | None = None
        """The trained head (None: VADER serves sentiment, e.g. with the fp32 graph)."""
        self._vader = VaderSentiment()

    @classmethod
    def load(cls, settings: Settings, cache: TieredCache) -> Models:
        return cls(settings, cache)

    @property
    def embeddings(self) -> EmbeddingModel:
        if self._embeddings is None:
            raise RuntimeError("the embedding model is not loaded")
        return self._embeddings

    @property
    def labels(self) -> Classifier:
        if self._labels is None:
            raise RuntimeError("the label set is not loaded")
        return self._labels

    async def __aenter__(self) -> Models:
        settings = self.settings
        version = model_version(settings.ml_quantized)
        # A head the settings name is read and checked first: a start it refuses is refused before
        # the encoder opens (seconds, for the fp32 graph).
        named = await asyncio.to_thread(self._named_head, version)
        cache_dir = Path(settings.data_dir) / "models"
        loaders = {  # each opens in a thread of its own, all at once
            "embeddings": asyncio.to_thread(
                opened_encoder, cache_dir, settings.model_threads, settings.ml_quantized, settings.ml_nice
            ),
        }
        loaded = dict(zip(loaders, await asyncio.gather(*loaders.values()), strict=True))
        # Everything else that can be refused (a broken label set) before the batcher starts: a
        # start that fails leaves nothing running.
        labels: Classifier = (
            named
            if named is not None
            else await asyncio.to_thread(self._classifier, loaded["embeddings"], version)
        )
        try:
            self.sentiment_head = EmbeddingSentiment.load(model_version=version)
        except IncompatibleHead as error:  # the head was trained on other vectors: the baseline serves
            log.warning("sentiment_head_not_used", reason=str(error), serving="vader")
        self._embeddings = await self._stack.enter_async_context(
            EmbeddingModel(
                loaded["embeddings"],
                self.cache,
                version,
                max_batch=settings.ml_max_batch,
                max_wait_s=settings.ml_max_wait_s,
                max_queue=settings.ml_max_queue,
                nice=settings.ml_nice,
            )
        )
        self.ready["embeddings"] = True
        log.info("model_ready", model="embeddings", version=version)
        self._labels = labels
        self.ready["labels"] = True
        log.info("model_ready", model="labels", kind=labels.kind, version=labels.version)
        log.info("model_ready", model="sentiment", version=self.sentiment_version)
        self.ready["sentiment"] = True
        return self

    def _named_head(self, version: str) -> LabelHead | None:
        """The few-shot head `SOPHIA_ML_CLASSIFIER_FILE` names, if it does: refused if unreadable or
        trained on other embeddings (it was asked for, so nothing serves in its place)."""
        settings = self.settings
        if settings.ml_classifier_file is None:
            return None
        try:
            return LabelHead.load(settings.ml_classifier_file, model_version=version)
        except IncompatibleHead as error:
            raise IncompatibleHead(
                f"SOPHIA_ML_CLASSIFIER_FILE: {error}; train it again (`sophia ml train-classifier`) "
                "with this SOPHIA_ML_QUANTIZED"
            ) from None
        except ValueError as error:
            raise ValueError(f"SOPHIA_ML_CLASSIFIER_FILE: {error}") from None

    def _classifier(self, encoder: SentenceEncoder, version: str) -> Classifier:
        """Where no head is named: zero-shot on `SOPHIA_ML_LABELS_FILE`'s labels; else the built-in
        head, or zero-shot on the built-in labels where that head does not fit (fp32)."""
        settings = self.settings
        if settings.ml_labels_file is None:
            try:
                return LabelHead.load(DEFAULT_HEAD, model_version=version)
            except IncompatibleHead as error:
                log.warning("label_head_not_used", reason=str(error), serving="zero-shot")
        return ZeroShotClassifier.from_settings(encoder, settings, version)

    @property
    def sentiment_model(self) -> str:
        """`head/all-MiniLM-L6-v2` (the trained head on the embeddings) or `vader`."""
        return f"head/{MODEL_ID}" if self.sentiment_head is not None else "vader"

    @property
    def sentiment_version(self) -> str:
        return self.sentiment_head.version if self.sentiment_head is not None else VaderSentiment.VERSION

    async def sentiment(self, texts: list[str], timeout_s: float) -> list[Prediction]:
        """The head on the texts' (cached) embeddings, or VADER on the texts themselves."""
        if self.sentiment_head is None:  # VADER's lexicon pass is CPU work too: off the event loop
            return await self.embeddings.batcher.in_model_thread(
                self._vader.predict, texts, timeout_s=timeout_s
            )
        return self.sentiment_head.predict(await self.embeddings.embed(texts, timeout_s=timeout_s))

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for name in self.ready:
            self.ready[name] = False
        await self._stack.aclose()
