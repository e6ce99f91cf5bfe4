"""Sophia's own tools: each answers within its output schema and the result budget, pages by
cursor, cuts what is too large with a cursor to the rest, and refuses bad arguments by name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from jsonschema import Draft202012Validator

from sophia.core.records import RecordKey
from sophia.database import Database, analytics, catalog, enrichment
from sophia.database.enrichment import Enrichment
from sophia.mcp_gateway.providers import Caller, ToolUnavailable
from sophia.mcp_gateway.sophia_tools import (
    MAX_RESULT_CHARS,
    RECORD_TEXT_CHARS,
    TOOLS,
    SophiaTools,
    fit_analytics,
)

READER = Caller("key-1", "abc123", "read")
OUTPUT_SCHEMAS = {spec.name: Draft202012Validator(spec.output_schema) for spec in TOOLS}
JANUARY = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.fixture
def source() -> str:
    return f"mcp{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tools(settings, database) -> SophiaTools:
    return SophiaTools(settings, database)


async def put(database: Database, source: str, kind: str, external_id: str, **data: Any) -> UUID:
    async with database.connection() as connection:
        stored = await catalog.upsert(connection, RecordKey(source, kind, external_id), data, JANUARY)
    return stored.id


async def answer(tools: SophiaTools, name: str, **arguments: Any) -> dict[str, Any]:
    """The tool's structured result, checked against its output schema and the budget."""
    result = await tools.call_tool(name, arguments, READER)
    assert not result.is_error, result.content[0].text
    structured = result.structured_content
    OUTPUT_SCHEMAS[name].validate(structured)
    text = result.content[0].text
    assert orjson.loads(text) == structured
    assert len(text.encode()) <= MAX_RESULT_CHARS
    return structured


async def refusal(tools: SophiaTools, name: str, arguments: Any, caller: Caller = READER) -> str:
    result = await tools.call_tool(name, arguments, caller)
    assert result.is_error
    assert result.structured_content is None
    return result.content[0].text


async def test_every_tool_is_listed_read_only_with_its_schemas_and_budget(tools):
    listed = await tools.list_tools(READER)
    assert [tool.name for tool in listed] == [
        "search_records",
        "get_record",
        "semantic_search",
        "active_deals",
        "pipeline",
        "win_rate",
        "velocity",
        "sentiment_trend",
        "topic_trend",
        "record_predictions",
    ]
    for tool in listed:
        Draft202012Validator.check_schema(tool.input_schema)
        Draft202012Validator.check_schema(tool.output_schema)
        assert tool.input_schema["additionalProperties"] is False
        assert tool.output_schema["type"] == "object"
        assert f"{MAX_RESULT_CHARS:,} characters" in tool.description
        hints = tool.annotations
        assert (hints.read_only_hint, hints.idempotent_hint, hints.open_world_hint) == (True, True, False)
        assert hints.title


async def test_a_caller_below_read_sees_no_tools_and_may_call_none(tools):
    nobody = Caller("key-2", "zzz999", "none")
    assert await tools.list_tools(nobody) == []
    assert "`read` scope" in await refusal(tools, "search_records", {}, nobody)


async def test_an_unknown_tool_is_a_tool_error_listing_the_tools(tools):
    assert "search_records" in await refusal(tools, "drop_everything", {})


async def test_search_records_pages_by_cursor_return_every_record_once(tools, database, source):
    written = {await put(database, source, "deal", f"d-{n}", amount=str(n)) for n in range(7)}
    seen: list[str] = []
    arguments: dict[str, Any] = {"source_system": source, "limit": 3}
    pages = 0
    while True:
        page = await answer(tools, "search_records", **arguments)
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        arguments["cursor"] = page["next_cursor"]
    assert pages == 3
    assert sorted(seen) == sorted(str(record_id) for record_id in written)
    whole = await answer(tools, "search_records", source_system=source, limit=7.0)  # JSON's integer
    assert whole["next_cursor"] is None
    assert len(whole["items"]) == 7


async def test_search_records_filters_on_data_like_the_records_list(tools, database, source):
    await put(database, source, "deal", "d-big", amount=12000, stage="won")
    await put(database, source, "deal", "d-small", amount="500", stage="won")
    page = await answer(tools, "search_records", source_system=source, data={"amount": 12000})
    assert [item["external_id"] for item in page["items"]] == ["d-big"]
    page = await answer(tools, "search_records", source_system=source, kind="deal", data={"amount": "500"})
    assert [item["external_id"] for item in page["items"]] == ["d-small"]


async def test_a_large_record_is_cut_to_the_budget_with_a_cursor_to_the_rest(tools, database, source):
    fields = {f"field_{n}": "x" * 900 for n in range(30)}
    written = {await put(database, source, "note", f"n-{n}", **fields) for n in range(3)}
    seen = []
    arguments: dict[str, Any] = {"source_system": source}
    while True:
        page = await answer(tools, "search_records", **arguments)
        assert len(page["items"]) == 1
        assert page["truncated"]
        assert "budget" in page["note"]
        seen.append(page["items"][0]["id"])
        if page["next_cursor"] is None:
            break
        arguments["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(str(record_id) for record_id in written)


async def test_get_record_cuts_a_long_text_and_marks_it(tools, database, source):
    record_id = await put(database, source, "call", "c-long", transcript="word " * 10_000, caller="Ann")
    result = await answer(tools, "get_record", id=str(record_id))
    data = result["record"]["data"]
    assert data["caller"] == "Ann"
    assert data["transcript"].startswith("word " * (RECORD_TEXT_CHARS // 5))
    assert data["transcript"].endswith(f"[cut: {50_000 - RECORD_TEXT_CHARS} more characters]")
    assert result["truncated"]
    assert "cut" in result["note"]


async def test_get_record_answers_a_tool_error_for_an_unknown_id(tools):
    assert "No record" in await refusal(tools, "get_record", {"id": str(uuid.uuid4())})


async def test_semantic_search_without_a_model_matches_words_and_says_so(tools, database, source):
    first, _ = await enriched(database, source)
    result = await answer(tools, "semantic_search", query="price", filters={"source_system": source})
    assert result["mode"] == "lexical"
    assert "Words only" in result["note"]
    assert [item["record"]["id"] for item in result["items"]] == [str(first)]
    assert result["items"][0]["semantic_rank"] is None


async def test_semantic_search_with_a_model_finds_by_meaning_and_pages(settings, database, source):
    first, second = await enriched(database, source)

    async def embed(texts: list[str]) -> list[list[float]]:
        return [one_hot(1) for _ in texts]  # nearest: the second message

    tools = SophiaTools(settings, database, embed)
    result = await answer(tools, "semantic_search", query="price", k=1, filters={"source_system": source})
    assert result["mode"] == "hybrid"
    assert "note" not in result
    assert result["items"][0]["record"]["id"] in {str(first), str(second)}
    rest = await answer(
        tools,
        "semantic_search",
        query="price",
        k=1,
        filters={"source_system": source},
        cursor=result["next_cursor"],
    )
    assert {result["items"][0]["record"]["id"], rest["items"][0]["record"]["id"]} == {str(first), str(second)}
    assert rest["next_cursor"] is None


async def test_record_predictions_gives_each_task_with_its_versions(tools, database, source):
    first, _ = await enriched(database, source)
    result = await answer(tools, "record_predictions", id=str(first))
    assert result["record_version"] == 1
    assert result["predictions"]["sentiment"]["prediction"] == {"label": "negative", "score": 0.9}
    assert result["predictions"]["classification"]["record_version"] == 1
    assert "No record" in await refusal(tools, "record_predictions", {"id": str(uuid.uuid4())})


async def test_active_deals_sort_and_page_by_cursor(tools, database, source):
    for n, amount in enumerate([300, 100, 500, 200]):
        await put(
            database, source, "deal", f"d-{n}", dealname=f"Deal {n}", amount=str(amount), dealstage="open"
        )
    await put(database, source, "deal", "d-won", dealname="Won", amount="900", dealstage="closedwon")
    amounts: list[float] = []
    arguments: dict[str, Any] = {"source_system": source, "limit": 3, "sort": "amount", "order": "desc"}
    while True:
        page = await answer(tools, "active_deals", **arguments)
        amounts += [deal["amount"] for deal in page["items"]]
        if page["next_cursor"] is None:
            break
        arguments["cursor"] = page["next_cursor"]
    assert amounts == [500, 300, 200, 100]
    both = {"source_system": source, "offset": 1, "cursor": "abc"}
    assert "`cursor`" in await refusal(tools, "active_deals", both)


async def test_each_analytics_tool_answers_with_its_freshness(tools, database, source):
    ids = [
        await put(
            database, source, "deal", "d-1", dealstage="qualifiedtobuy", amount="100", pipeline="default"
        ),
        await put(
            database, source, "deal", "d-2", dealstage="closedwon", amount="200", closedate="2026-01-25"
        ),
        await put(
            database, source, "deal", "d-3", dealstage="closedlost", amount="50", closedate="2026-02-10"
        ),
    ]
    first, second = await enriched(database, source)
    async with database.connection() as connection:
        await analytics.apply_deal_changes(connection, ids, as_of=JANUARY)
        await analytics.apply_conversation_changes(connection, [first, second], as_of=JANUARY)
    pipeline = await answer(tools, "pipeline", source_system=source)
    assert pipeline["as_of"] is not None
    assert [(stage["stage"], stage["deals"], stage["amount"]) for stage in pipeline["stages"]] == [
        ("qualifiedtobuy", 1, 100)
    ]
    rate = (await answer(tools, "win_rate", source_system=source))["win_rate"]
    assert (rate["won"], rate["lost"], rate["win_rate"]) == (1, 1, 0.5)
    velocity = (await answer(tools, "velocity", source_system=source))["velocity"]
    assert velocity["open_deals"] == 1
    sentiment = await answer(tools, "sentiment_trend", source_system=source, kind="message")
    assert sentiment["weeks"] == [{"week": "2026-01-05", "counts": {"negative": 1, "positive": 1}}]
    topics = await answer(
        tools, "topic_trend", source_system=source, **{"from": "2026-01-01", "to": "2026-01-31"}
    )
    assert topics["weeks"][0]["counts"] == {"pricing": 1, "support": 1}


def test_an_analytics_answer_past_the_budget_keeps_the_newest_weeks():
    weeks = [
        {"week": f"2026-01-{n:02}", "counts": {f"label-{m}": m for m in range(40)}} for n in range(1, 29)
    ]
    answered = fit_analytics({"as_of": None, "weeks": weeks})
    assert len(orjson.dumps(answered)) <= MAX_RESULT_CHARS
    assert answered["weeks"][-1] == weeks[-1]
    assert answered["omitted"]["weeks"] == len(weeks) - len(answered["weeks"]) > 0
    assert answered["truncated"]
    OUTPUT_SCHEMAS["topic_trend"].validate(answered)


def test_a_win_rate_past_the_budget_cuts_the_longest_list_first():
    figures = {"won": 1, "lost": 1, "win_rate": 0.5, "average_deal_size": 10, "average_cycle_days": 3}
    owners = [{"owner": f"owner-{n:04}", **figures} for n in range(400)]
    months = [{"month": f"2026-{n:02}-01", **figures} for n in range(1, 13)]
    answered = fit_analytics({"as_of": None, "win_rate": {**figures, "by_owner": owners, "by_month": months}})
    assert len(orjson.dumps(answered)) <= MAX_RESULT_CHARS
    assert answered["win_rate"]["by_owner"][0] == owners[0]
    assert answered["win_rate"]["by_month"] == months
    assert set(answered["omitted"]) == {"by_owner"}
    OUTPUT_SCHEMAS["win_rate"].validate(answered)


@pytest.mark.parametrize(
    ("name", "arguments", "named"),
    [
        ("search_records", {"limit": "10"}, "`limit`: must be of type integer, not string"),
        ("search_records", {"limit": 1000}, "`limit`: must be at most 100"),
        ("search_records", {"colour": "red"}, "`colour`"),
        ("semantic_search", {"query": "x", "filters": {"owner": "ann"}}, "`owner` in `filters`"),
        ("semantic_search", {"query": "x" * 1001}, "`query`: longer than 1000 characters"),
        ("semantic_search", {}, "`query`"),
        ("search_records", {"kind": "de\x00al"}, "`kind`: text may not contain NUL"),
        ("search_records", {"data": {"stage": "open\ud800"}}, "`data.stage`: holds a lone surrogate"),
        (
            "search_records",
            {"updated_since": "yesterday"},
            "`updated_since`: not a date and time with an offset",
        ),
        ("search_records", {"cursor": "bm90IGEgY3Vyc29y"}, "`cursor`"),
        ("get_record", {"id": "not-a-uuid"}, "`id`: not a UUID such as"),
        ("record_predictions", {"id": 42}, "`id`: must be of type string"),
        ("active_deals", {"sort": "colour"}, "`sort`: must be one of"),
        ("active_deals", {"cursor": "bm90IGEgY3Vyc29y"}, "`cursor`: malformed"),
        ("pipeline", {"from": "2026-03-01", "to": "2026-01-31"}, "`to`"),
        ("sentiment_trend", {"kind": "deal"}, "`kind`: must be one of call, message"),
        ("win_rate", {"from": "March"}, "`from`: not a date such as 2026-03-01"),
    ],
)
async def test_a_bad_argument_is_a_tool_error_naming_it(tools, name, arguments, named):
    assert named in await refusal(tools, name, arguments)


async def test_arguments_that_are_not_an_object_are_refused(tools):
    assert "object" in await refusal(tools, "search_records", ["source_system"])


async def test_a_database_outage_raises_tool_unavailable(settings):
    closed = Database(settings)  # never opened: no pool
    with pytest.raises(ToolUnavailable, match="pool"):
        await SophiaTools(settings, closed).call_tool("get_record", {"id": str(uuid.uuid4())}, READER)


def one_hot(index: int) -> list[float]:
    return [1.0 if position == index else 0.0 for position in range(384)]


async def enriched(database: Database, source: str) -> tuple[UUID, UUID]:
    """Two messages of `source`, embedded apart, with a sentiment and a topic each."""
    texts = {"m-price": "The price is far too high", "m-thanks": "Thanks, the support was great"}
    found = [
        ("negative", "pricing", one_hot(0)),
        ("positive", "support", one_hot(1)),
    ]
    ids = []
    async with database.connection() as connection, connection.transaction():
        for (external_id, text), (sentiment, topic, embedding) in zip(texts.items(), found, strict=True):
            stored = await catalog.upsert(
                connection, RecordKey(source, "message", external_id), {"text": text}, JANUARY
            )
            predictions = {
                "sentiment": {"label": sentiment, "score": 0.9},
                "classification": {"labels": [topic]},
            }
            result = Enrichment(stored.id, stored.version, text, embedding, predictions)
            await enrichment.write(
                connection, [result], "minilm", "v1", {"sentiment": "s1", "classification": "c1"}
            )
            ids.append(stored.id)
    return ids[0], ids[1]
