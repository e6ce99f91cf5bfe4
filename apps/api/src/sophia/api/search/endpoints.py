"""`POST /api/v1/search`: hybrid search (meaning and words) over enriched records, with the
records list's filters. Without the models (`SOPHIA_ML_ENABLED` off) it searches words only and
says so in `mode`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from sophia.api.dependencies import Reader
from sophia.api.records.schemas import Moment, PlainText
from sophia.api.state import AppState
from sophia.core.records import IDENTIFIER_PATTERN, MAX_DATA_FILTERS, RecordFilter
from sophia.database import search
from sophia.web.pages import SearchHit as PageHit

router = APIRouter(prefix="/api/v1", tags=["search"])
CANDIDATES_PER_RESULT = 4
"""Each side of the fusion ranks this many candidates per result asked for (at least 40)."""


class SearchFilters(BaseModel):
    """The records list's filters: equality on source system, kind and top-level data keys."""

    model_config = ConfigDict(extra="forbid")
    source_system: str | None = Field(None, pattern=IDENTIFIER_PATTERN)
    kind: str | None = Field(None, pattern=IDENTIFIER_PATTERN)
    updated_since: Moment = None
    data: dict[PlainText, PlainText] = Field(default_factory=dict, max_length=MAX_DATA_FILTERS)


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: PlainText = Field(min_length=1, max_length=1000, examples=["customer unhappy about the price"])
    k: int = Field(10, ge=1, le=100, description="How many records to return.")
    filters: SearchFilters = Field(default_factory=SearchFilters)


class SearchHit(BaseModel):
    record: dict[str, Any]
    score: float = Field(description="Reciprocal-rank fusion of the two sides (higher is better).")
    semantic_rank: int | None = Field(description="Its rank by meaning (embedding), if found so.")
    lexical_rank: int | None = Field(description="Its rank by words (full text), if found so.")


class SearchOut(BaseModel):
    mode: str = Field(examples=["hybrid"], description="`hybrid`, or `lexical` without the models.")
    items: list[SearchHit]


@router.post("/search", response_model=SearchOut, summary="Search enriched records by meaning and words")
async def search_records(body: SearchIn, caller: Reader) -> Response:
    where = RecordFilter(
        body.filters.source_system,
        body.filters.kind,
        body.filters.updated_since,
        tuple(sorted(body.filters.data.items())),
    )
    mode, hits = await find(caller.state, body.q, body.k, where)
    items = b",".join(  # each record's JSON as PostgreSQL built it, not parsed and dumped again
        b'{"record":%s,"score":%s,"semantic_rank":%s,"lexical_rank":%s}'
        % (hit.json.encode(), *(orjson.dumps(v) for v in (hit.score, hit.semantic_rank, hit.lexical_rank)))
        for hit in hits
    )
    return Response(b'{"mode":"%s","items":[%s]}' % (mode.encode(), items), media_type="application/json")


async def find(state: AppState, q: str, k: int, where: RecordFilter) -> tuple[str, list[search.Hit]]:
    """The search's mode (`hybrid`, or `lexical` without the models) and its best `k` hits."""
    embedding = None
    if state.models is not None:
        [embedding] = await state.models.embeddings.embed([q], timeout_s=state.settings.ml_timeout_s)
    candidates = max(40, k * CANDIDATES_PER_RESULT)
    async with state.database.connection() as connection, connection.transaction():
        hits = await search.hybrid(
            connection, q, None if embedding is None else embedding.tolist(), where, k, candidates
        )
    return ("hybrid" if embedding is not None else "lexical"), hits


async def dashboard_search(state: AppState, q: str, k: int) -> tuple[str, list[PageHit]]:
    """The dashboard's search box: every record, parsed for its page."""
    mode, hits = await find(state, q, k, RecordFilter())
    return mode, [PageHit(orjson.loads(hit.json), hit.score) for hit in hits]
