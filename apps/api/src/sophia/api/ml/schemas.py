"""What crosses HTTP for the models: Sophia's own shapes, and OpenAI's for `/v1/embeddings`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sophia.core.documents import text_problem


def _text(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_text)]
"""A string the tokenizer can read: no lone surrogate (which Python's JSON parser lets through)."""


class EmbedIn(BaseModel):
    """`POST /api/v1/ml/embed`: texts to embed, answered in the same order."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Text] = Field(min_length=1, examples=[["Customer asked for a discount on the annual plan."]])


class EmbedOut(BaseModel):
    model: str = Field(examples=["all-MiniLM-L6-v2"])
    version: str = Field(description="Changes when the vectors would change (a new graph or weights).")
    dimensions: int = Field(examples=[384])
    embeddings: list[list[float]] = Field(description="Unit-length vectors, one per input, in order.")


class Classification(BaseModel):
    labels: list[str] = Field(description="Labels scoring at least the threshold, best first.")
    scores: dict[str, float] = Field(
        description="Every label's score, best first: a probability from a head, a similarity zero-shot."
    )


class ClassifyOut(BaseModel):
    model: str = Field(
        description="`zero-shot/...` (similarity to label descriptions) or `few-shot/...` (a trained head).",
        examples=["few-shot/all-MiniLM-L6-v2"],
    )
    version: str = Field(
        description="The embeddings' and the classifier's version.",
        examples=["onnx-int8-b1+head-34a4d86b"],
    )
    threshold: float = Field(description="The score from which a label is given.")
    results: list[Classification] = Field(description="One per input, in order.")


class Sentiment(BaseModel):
    label: Literal["negative", "neutral", "positive"]
    scores: dict[str, float] = Field(
        description="Each label's score (they sum to 1): a probability from the head, a share of wording "
        "from VADER."
    )


class SentimentOut(BaseModel):
    model: str = Field(
        description="`head/...` (a head trained on the embeddings) or `vader` (the lexicon baseline).",
        examples=["head/all-MiniLM-L6-v2"],
    )
    version: str = Field(
        description="The embeddings' and the head's version, or VADER's.",
        examples=["onnx-int8-b1+head-5e70e335"],
    )
    results: list[Sentiment] = Field(description="One per input, in order.")


class OpenAIEmbeddingsIn(BaseModel):
    """OpenAI's embeddings request, as the official client sends it. Token arrays are refused."""

    model_config = ConfigDict(extra="forbid")
    input: Text | list[Text] = Field(examples=["Customer asked for a discount on the annual plan."])
    model: str = Field(examples=["all-MiniLM-L6-v2"])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Only the model's own (384) is available.")
    user: str | None = None


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage
