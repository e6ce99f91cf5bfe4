"""HTTP for the ML models. `/api/v1/ml/embed` in Sophia's shape; `/v1/embeddings` in OpenAI's, so
the official `openai` client (or anything speaking that API) works unchanged with an API key."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Response

from sophia.api.dependencies import Reader
from sophia.api.ml.schemas import (
    ClassifyOut,
    EmbedIn,
    EmbedOut,
    OpenAIEmbeddingsIn,
    OpenAIEmbeddingsOut,
    SentimentOut,
)
from sophia.api.state import AppState
from sophia.core.errors import FieldError, Invalid
from sophia.ml.embeddings import MODEL_ID
from sophia.ml.models import Models
from sophia.shared.settings import Settings

router = APIRouter(tags=["ml"])
BUSY: dict[int | str, dict[str, Any]] = {
    503: {"description": "The model's queue is full, or the deadline passed: retry after Retry-After"}
}


def _models(state: AppState) -> Models:
    assert state.models is not None, "the router is mounted only with SOPHIA_ML_ENABLED"
    return state.models


def _check_inputs(texts: list[str], settings: Settings, where: str) -> None:
    if len(texts) > settings.ml_max_inputs:
        raise Invalid(
            f"At most {settings.ml_max_inputs} inputs per request; this one has {len(texts)}.",
            [FieldError(("body", where), f"{len(texts)} inputs")],
        )
    for index, text in enumerate(texts):
        if len(text) > settings.ml_max_input_chars:
            raise Invalid(
                f"Input {index} has {len(text):,} characters; at most {settings.ml_max_input_chars:,}.",
                [FieldError(("body", where, index), "too long")],
            )


@router.post(
    "/api/v1/ml/embed",
    response_model=EmbedOut,
    responses=BUSY,
    summary="Embed texts (all-MiniLM-L6-v2, 384 dims, unit length), batched and cached",
)
async def embed(body: EmbedIn, caller: Reader) -> Response:
    _check_inputs(body.inputs, caller.state.settings, "inputs")
    model = _models(caller.state).embeddings
    vectors = await model.embed(body.inputs, timeout_s=caller.state.settings.ml_timeout_s)
    answer = {
        "model": MODEL_ID,
        "version": model.version,
        "dimensions": model.dimension,
        "embeddings": vectors,
    }
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post(
    "/api/v1/ml/sentiment",
    response_model=SentimentOut,
    responses=BUSY,
    summary="Sentiment of texts: negative, neutral or positive, with each label's score",
)
async def sentiment(body: EmbedIn, caller: Reader) -> Response:
    _check_inputs(body.inputs, caller.state.settings, "inputs")
    models = _models(caller.state)
    found = await models.sentiment(body.inputs, caller.state.settings.ml_timeout_s)
    results = [{"label": prediction.label, "scores": prediction.scores} for prediction in found]
    answer = {"model": models.sentiment_model, "version": models.sentiment_version, "results": results}
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post(
    "/api/v1/ml/classify",
    response_model=ClassifyOut,
    responses=BUSY,
    summary="Label texts (pricing, competitor mention, churn risk, ...): zero-shot or a trained head",
)
async def classify(body: EmbedIn, caller: Reader) -> Response:
    _check_inputs(body.inputs, caller.state.settings, "inputs")
    models = _models(caller.state)
    vectors = await models.embeddings.embed(body.inputs, timeout_s=caller.state.settings.ml_timeout_s)
    labels = models.labels
    results = [{"labels": found, "scores": scores} for found, scores in labels.classify(vectors)]
    answer = {
        "model": f"{labels.kind}/{MODEL_ID}",
        "version": labels.version,
        "threshold": labels.threshold,
        "results": results,
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingsOut,
    responses=BUSY,
    summary="OpenAI-compatible embeddings (use a Sophia API key as the OpenAI key)",
)
async def openai_embeddings(body: OpenAIEmbeddingsIn, caller: Reader) -> Response:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise Invalid("Send at least one input.", [FieldError(("body", "input"), "empty")])
    model = _models(caller.state).embeddings
    if body.model != MODEL_ID:
        raise Invalid(
            f"Unknown model {body.model!r}; this server has {MODEL_ID!r}.",
            [FieldError(("body", "model"), "unknown")],
        )
    if body.dimensions not in (None, model.dimension):
        raise Invalid(
            f"{MODEL_ID} gives {model.dimension} dimensions; it cannot shorten them.",
            [FieldError(("body", "dimensions"), f"not {model.dimension}")],
        )
    _check_inputs(texts, caller.state.settings, "input")
    vectors = await model.embed(texts, timeout_s=caller.state.settings.ml_timeout_s)
    tokens = await model.count_tokens(texts, timeout_s=caller.state.settings.ml_timeout_s)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(vector.tobytes()).decode()
            if body.encoding_format == "base64"
            else vector,
        }
        for index, vector in enumerate(vectors)
    ]
    answer = {
        "object": "list",
        "data": data,
        "model": MODEL_ID,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
