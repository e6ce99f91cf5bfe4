"""Sophia's own tools: records, search, deals, analytics and predictions, read-only.

The contract, for every tool:
- Arguments are checked against the tool's input schema (the one the client lists) before
  anything runs, and text against what PostgreSQL and UTF-8 can hold; a bad argument is a tool
  error (`is_error`) that names it and says what is wrong, never an exception.
- A result is an object that matches the tool's output schema, in `structured_content`, and the
  same JSON in one text block. Its JSON takes at most `MAX_RESULT_CHARS` characters (counted as
  UTF-8 bytes, so never more characters): lists stop where the next item would not fit and give a
  `next_cursor` to go on from; text longer than `LIST_TEXT_CHARS` in a list (`RECORD_TEXT_CHARS`
  in `get_record`) is cut and marked; `truncated` and `note` say what was cut.
- Every tool needs the `read` scope. A database outage raises `ToolUnavailable`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import mcp_types as types
import orjson
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match

from sophia.core.cursor import decode_cursor, encode_cursor, filter_fingerprint
from sophia.core.documents import describe, document_problem, printable
from sophia.core.errors import FieldError, Invalid, NotFound, Unavailable
from sophia.core.records import EXTERNAL_ID_MAX_LENGTH, IDENTIFIER_PATTERN, RecordFilter
from sophia.database import Database, analytics, catalog, enrichment, search, views
from sophia.mcp_gateway import wire
from sophia.mcp_gateway.providers import Caller, ToolUnavailable, tool_error
from sophia.shared.settings import Settings

MAX_RESULT_CHARS = 16_000
"""The most a result's JSON takes: about 4k tokens of a model's context."""
LIST_TEXT_CHARS = 1_000
"""Text of an item in a list is cut past this many characters."""
RECORD_TEXT_CHARS = 8_000
"""Text of the one record `get_record` returns is cut past this many characters."""
ENVELOPE_RESERVE = 600
"""Room kept beside a list's items for `next_cursor`, `truncated` and `note`."""
MAX_SEARCH_DEPTH = 200
MAX_OFFSET = 10_000
"""The most deals `active_deals` skips, by `offset` or by a cursor."""
"""How far down its ranking `semantic_search` pages."""
CANDIDATES_PER_RESULT = 4
"""As the search API: each side of the fusion ranks this many candidates per result asked for."""
ARGUMENT_DEPTH = 8
CUT_MARKER = "… [cut: {count} more characters]"

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]
"""Texts to their embeddings (the gateway's model client)."""


def _arguments(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An input object: these properties and no other."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _shape(properties: dict[str, Any], *optional: str) -> dict[str, Any]:
    """An output object: every property there but the `optional` ones, and no other."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


IDENTIFIER = {"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": 63}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}
DAY = {"type": "string", "format": "date", "maxLength": 10}
CURSOR = _described({"type": "string", "minLength": 1, "maxLength": 200}, "`next_cursor` of the last page.")
RECORD_ID = _described({"type": "string", "format": "uuid", "maxLength": 36}, "The record's id (a UUID).")
LIMIT = _described({"type": "integer", "minimum": 1, "maximum": 100}, "At most this many (default 20).")
RECORD_FILTERS = {
    "source_system": _described(IDENTIFIER, "Only records of this source system, e.g. `hubspot`."),
    "kind": _described(IDENTIFIER, "Only records of this kind, e.g. `deal`, `call`, `message`."),
    "updated_since": _described(
        {"type": "string", "format": "date-time", "maxLength": 40},
        "Only records updated at or after this time (RFC 3339 with an offset).",
    ),
    "data": _described(
        {
            "type": "object",
            "maxProperties": 20,
            "propertyNames": {"minLength": 1, "maxLength": 64},
            "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": 1000},
        },
        'Equality on top-level keys of the record\'s data, e.g. {"dealstage": "qualified"}; '
        "the text `12000` also matches the number, `true` the boolean.",
    ),
}
DEAL_FILTERS = {
    "source_system": _described(IDENTIFIER, "Deals of this source system only."),
    "owner": _described(NAME, "Deals of this owner id only."),
    "pipeline": _described(NAME, "Deals of this pipeline only."),
}
MONTHS = {
    "from": _described(DAY, "First month counted (YYYY-MM-DD; its day is ignored)."),
    "to": _described(DAY, "Last month counted (included)."),
}
WEEKS = {
    "from": _described(DAY, "First week counted (its Monday on; YYYY-MM-DD)."),
    "to": _described(DAY, "Last week counted (included)."),
    "source_system": _described(IDENTIFIER, "Calls and messages of this source system only."),
    "kind": _described({"type": "string", "enum": ["call", "message"]}, "Calls or messages alone."),
}

TEXT = {"type": "string"}
OPTIONAL_TEXT = {"type": ["string", "null"]}
NUMBER = {"type": ["number", "null"]}
COUNT = {"type": "integer", "minimum": 0}
AS_OF = _described(OPTIONAL_TEXT, "The time of the newest change the summaries hold (null: none yet).")
NOTES = {
    "truncated": _described({"type": "boolean"}, "Whether anything was cut to fit the result budget."),
    "note": _described(TEXT, "What was cut, and how to see the rest."),
}
PAGE = {
    "next_cursor": _described(OPTIONAL_TEXT, "Pass as `cursor` for the next page; null at the end."),
    **NOTES,
}
RECORD = _shape(
    {
        "id": TEXT,
        "source_system": TEXT,
        "kind": TEXT,
        "external_id": {"type": "string", "maxLength": EXTERNAL_ID_MAX_LENGTH},
        "data": _described({"type": "object"}, "The record's fields, as the source system has them."),
        "version": {"type": "integer"},
        "created_at": TEXT,
        "updated_at": TEXT,
        "deleted_at": OPTIONAL_TEXT,
    }
)
HIT = _shape(
    {
        "record": RECORD,
        "score": _described({"type": "number"}, "Reciprocal-rank fusion of both sides; higher is better."),
        "semantic_rank": {"type": ["integer", "null"]},
        "lexical_rank": {"type": ["integer", "null"]},
    }
)
DEAL = _shape(
    {
        **dict.fromkeys(("id", "source_system", "external_id"), TEXT),
        **dict.fromkeys(("name", "stage", "pipeline", "close_date", "owner_id"), OPTIONAL_TEXT),
        "amount": NUMBER,
        "updated_at": TEXT,
    }
)
FIGURES = {
    "won": COUNT,
    "lost": COUNT,
    "win_rate": _described(NUMBER, "won / (won + lost); null without closed deals."),
    "average_deal_size": NUMBER,
    "average_cycle_days": NUMBER,
}
PREDICTION = _shape(
    {
        "model_version": TEXT,
        "record_version": {"type": "integer"},
        "prediction": {"type": "object"},
        "updated_at": TEXT,
    }
)
OMITTED = _described(
    {"type": "object", "additionalProperties": {"type": "integer"}}, "How many entries of each list were cut."
)
BUDGET = f" Its JSON takes at most {MAX_RESULT_CHARS:,} characters (~4k tokens): "
LIST_BUDGET = (
    f"{BUDGET}the list stops where the next item would not fit, with `next_cursor` to go on; text past "
    f"{LIST_TEXT_CHARS:,} characters is cut and marked; `truncated` and `note` say so."
)
ANALYTICS_BUDGET = f"{BUDGET}longer lists are cut (`omitted` says how many). `as_of` says how fresh it is."


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool as the client lists it."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    def tool(self) -> types.Tool:
        annotations = types.ToolAnnotations(
            title=self.title, read_only_hint=True, idempotent_hint=True, open_world_hint=False
        )
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            annotations=annotations,
        )


def _analytics_spec(name: str, title: str, description: str, key: str, answer: dict[str, Any]) -> ToolSpec:
    arguments = WEEKS if key == "weeks" else {**MONTHS, **DEAL_FILTERS}
    output = _shape({"as_of": AS_OF, key: answer, **NOTES, "omitted": OMITTED}, "note", "omitted")
    return ToolSpec(name, title, description + ANALYTICS_BUDGET, _arguments(arguments), output)


TREND = _array(
    _shape(
        {"week": _described(TEXT, "Its Monday."), "counts": {"type": "object", "additionalProperties": COUNT}}
    )
)
TOOLS = (
    ToolSpec(
        "search_records",
        "Search records",
        "Records of Sophia's catalog (deals, calls, messages, ... of every source system), filtered by "
        "source system, kind, update time and equality on data keys, in id order." + LIST_BUDGET,
        _arguments({**RECORD_FILTERS, "limit": LIMIT, "cursor": CURSOR}),
        _shape({"items": _array(RECORD), **PAGE}, "note"),
    ),
    ToolSpec(
        "get_record",
        "Get a record",
        f"One record of the catalog by its id.{BUDGET}text past {RECORD_TEXT_CHARS:,} characters is cut "
        "and marked, more where the record is still too large; `truncated` and `note` say so.",
        _arguments({"id": RECORD_ID}, "id"),
        _shape({"record": RECORD, **NOTES}, "note"),
    ),
    ToolSpec(
        "semantic_search",
        "Search by meaning and words",
        "Hybrid search over enriched records (calls, messages, ...): nearest embeddings and full-text "
        "matches fused by rank, with the records list's filters. `mode` says `hybrid`, or `lexical` "
        "where no embedding model is configured (words only)." + LIST_BUDGET,
        _arguments(
            {
                "query": _described(
                    {"type": "string", "minLength": 1, "maxLength": 1000}, "What to look for."
                ),
                "k": _described({"type": "integer", "minimum": 1, "maximum": 50}, "Results (default 10)."),
                "filters": _arguments(RECORD_FILTERS),
                "cursor": CURSOR,
            },
            "query",
        ),
        _shape(
            {"mode": {"type": "string", "enum": ["hybrid", "lexical"]}, "items": _array(HIT), **PAGE}, "note"
        ),
    ),
    ToolSpec(
        "active_deals",
        "Active deals",
        "Open deals (the active-deals view, kept by the catalog's writes), sorted, of one source "
        "system, owner or pipeline where given." + LIST_BUDGET,
        _arguments(
            {
                "sort": {"type": "string", "enum": list(views.ACTIVE_DEALS_SORTS), "default": "amount"},
                "order": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
                "limit": LIMIT,
                "offset": _described(
                    {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Deals to skip."
                ),
                "cursor": CURSOR,
                **DEAL_FILTERS,
            }
        ),
        _shape({"items": _array(DEAL), "offset": COUNT, **PAGE}, "note"),
    ),
    _analytics_spec(
        "pipeline",
        "Sales pipeline",
        "Open deals by stage (created in the months asked): count, amount and probability-weighted "
        "amount, in funnel order.",
        "stages",
        _array(_shape({"stage": OPTIONAL_TEXT, "deals": COUNT, "amount": NUMBER, "weighted_amount": NUMBER})),
    ),
    _analytics_spec(
        "win_rate",
        "Win rate",
        "Deals won and lost in the months asked (by closing month): win rate, average size and cycle "
        "of the won ones; in all, by owner and by month.",
        "win_rate",
        _shape(
            {
                **FIGURES,
                "by_owner": _array(_shape({"owner": OPTIONAL_TEXT, **FIGURES})),
                "by_month": _array(_shape({"month": TEXT, **FIGURES})),
            }
        ),
    ),
    _analytics_spec(
        "velocity",
        "Sales velocity",
        "Sales velocity = open deals x average won size x win rate / average cycle days: the amount "
        "the pipeline turns into wins per day, at the pace of the months asked.",
        "velocity",
        _shape({"open_deals": COUNT, **FIGURES, "velocity_per_day": NUMBER}),
    ),
    _analytics_spec(
        "sentiment_trend",
        "Sentiment trend",
        "Per week (Monday), calls and messages by the sentiment the model gave them.",
        "weeks",
        TREND,
    ),
    _analytics_spec(
        "topic_trend",
        "Topic trend",
        "Per week (Monday), calls and messages by topic label (one may carry several).",
        "weeks",
        TREND,
    ),
    ToolSpec(
        "record_predictions",
        "Record predictions",
        "What the models said of a record (sentiment, labels, ...) by task, with the record version "
        f"each was made from beside the record's version now.{BUDGET}text past {LIST_TEXT_CHARS:,} "
        "characters is cut and marked; `truncated` and `note` say so.",
        _arguments({"id": RECORD_ID}, "id"),
        _shape(
            {
                "record_id": TEXT,
                "record_version": {"type": "integer"},
                "predictions": {"type": "object", "additionalProperties": PREDICTION},
                **NOTES,
            },
            "note",
        ),
    ),
)


class BadArgument(Exception):
    """An argument the schema lets through but the tool cannot use; the message names it."""


def _json_default(value: object) -> object:
    """Exact numerics as JSON numbers (integers where whole and exact in a double); UUIDs as text."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and abs(value) < 2**53:
            return int(value)
        return float(value)
    if isinstance(value, UUID):  # asyncpg's own UUID class, which orjson does not take as one
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_json_default)


def _size(value: object) -> int:
    return len(_dumps(value))


def _cut(value: Any, text_chars: int, items: int | None, cuts: list[str]) -> Any:
    """`value` with text past `text_chars` characters cut and marked, and (where `items` is given)
    objects and arrays past that many entries cut and marked; each cut is noted in `cuts`."""
    if isinstance(value, str):
        if len(value) <= text_chars:
            return value
        cuts.append("text")
        return value[:text_chars] + CUT_MARKER.format(count=len(value) - text_chars)
    if isinstance(value, dict):
        pairs = list(value.items())
        kept = pairs if items is None else pairs[:items]
        cut = {key: _cut(child, text_chars, items, cuts) for key, child in kept}
        if len(kept) < len(pairs):
            cuts.append("keys")
            cut["…"] = f"[cut: {len(pairs) - len(kept)} more keys]"
        return cut
    if isinstance(value, list):
        shown = value if items is None else value[:items]
        cut_list = [_cut(child, text_chars, items, cuts) for child in shown]
        if len(shown) < len(value):
            cuts.append("items")
            cut_list.append(f"… [cut: {len(value) - len(shown)} more items]")
        return cut_list
    return value


TEXT_STEPS = ((200, None), (50, None))
DOCUMENT_STEPS = ((200, None), (100, 20), (50, 5))


def _shrink(value: dict[str, Any], limit: int, steps: Sequence[tuple[int, int | None]]) -> dict[str, Any]:
    """`value` cut harder, step by step, until its JSON takes at most `limit` bytes; at last its
    JSON text, cut, as the one entry of an object."""
    for text_chars, items in steps:
        cut = _cut(value, text_chars, items, [])
        if _size(cut) <= limit:
            return dict(cut)
    text = _dumps(value).decode()
    keep = limit
    while True:
        last = {"…": text[:keep] + CUT_MARKER.format(count=len(text) - keep)}
        excess = _size(last) - limit
        if excess <= 0 or keep == 0:
            return last
        keep = max(0, keep - excess)  # a character is at least one byte: this removes the excess


def _fit_items(items: Sequence[Any], room: int, shrink: Callable[[Any, int], Any]) -> tuple[list[Any], bool]:
    """The longest head of `items` whose JSON array takes at most `room` bytes, and whether any
    was cut or left out. A first item too large alone is shrunk to fit, so a page always moves on."""
    kept: list[Any] = []
    used = 2  # []
    for item in items:
        size = _size(item) + (1 if kept else 0)
        if used + size > room:
            if not kept:
                kept.append(shrink(item, room - 2))
            return kept, True
        kept.append(item)
        used += size
    return kept, False


def _fit_record(record: dict[str, Any], room: int) -> dict[str, Any]:
    """A record cut to take at most `room` bytes: its `data` is cut, its identity never."""
    envelope = _size({**record, "data": {}}) - 2
    return {**record, "data": _shrink(record["data"], room - envelope, DOCUMENT_STEPS)}


def _fit_hit(hit: dict[str, Any], room: int) -> dict[str, Any]:
    """A search hit cut to take at most `room` bytes: its record's data is cut."""
    return {**hit, "record": _fit_record(hit["record"], room - (_size({**hit, "record": {}}) - 2))}


def _cut_record(record: dict[str, Any], text_chars: int, cuts: list[str]) -> dict[str, Any]:
    return {**record, "data": _cut(record["data"], text_chars, None, cuts)}


def _offset_cursor(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"o1.{offset}.{fingerprint}".encode()).decode().rstrip("=")


def _decode_offset_cursor(cursor: str, fingerprint: str) -> int:
    """The offset a cursor of `_offset_cursor` holds; `BadArgument` if it is damaged or was issued
    for other arguments."""
    try:
        version, offset_text, issued_for = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(".")
        )
        offset = int(offset_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset = -1
        version = issued_for = ""
    if (  # a cursor is not signed: one made by hand may hold any number, so it is bounded too
        version != "o1"
        or issued_for != fingerprint
        or not 0 <= offset <= MAX_OFFSET
        or _offset_cursor(offset, fingerprint) != cursor
    ):
        raise BadArgument(
            "Invalid argument `cursor`: malformed or issued for other arguments; start again without it."
        )
    return offset


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _day(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def _record_filter(arguments: dict[str, Any]) -> RecordFilter:
    """The records list's filter; data values as the REST list takes them (text: `12000` also
    matches the number, `true` the boolean)."""
    data = arguments.get("data", {})
    return RecordFilter(
        arguments.get("source_system"),
        arguments.get("kind"),
        _moment(arguments.get("updated_since")),
        tuple(sorted((key, v if isinstance(v, str) else wire.dumps(v).decode()) for key, v in data.items())),
    )


def _how(next_cursor: str | None) -> str:
    if next_cursor is not None:
        return "Pass `next_cursor` as `cursor` for the rest."
    return "An item too large alone is cut; get_record shows more of a record."


def _notes(truncated: bool, cut_text: bool, more: str) -> dict[str, Any]:
    """`truncated`, and a `note` on what was cut and how to see it."""
    notes = []
    if truncated:
        notes.append(f"Cut to fit the {MAX_RESULT_CHARS:,}-character result budget. {more}")
    if cut_text:
        notes.append("Long text is cut, marked '… [cut: N more characters]'.")
    return {"truncated": truncated or cut_text, **({"note": " ".join(notes)} if notes else {})}


FORMATS = FormatChecker(formats=("date", "uuid"))


def _is_moment(value: object) -> bool:
    """RFC 3339 with an offset, as the records API takes `updated_since`."""
    if not isinstance(value, str):
        return True
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    moment.astimezone(UTC)  # OverflowError past the ends of UTC: a ValueError's sibling
    return True


FORMATS.checks("date-time", raises=(ValueError, OverflowError))(_is_moment)


def _problem(error: ValidationError) -> str:
    """What is wrong, naming the argument (dotted inside objects)."""
    where = ".".join(str(part) for part in error.absolute_path)
    name = f"`{where}`" if where else "arguments"
    expected = error.validator_value
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        names = [key for key in error.instance if key not in known]
        unknown = ", ".join(f"`{printable(str(key))[:64]}`" for key in names[:5])
        more = f" and {len(names) - 5:,} more" if len(names) > 5 else ""
        return f"Unknown argument {unknown}{more} in {name}; allowed: {', '.join(known) or 'none'}."
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = ", ".join(f"`{key}`" for key in expected if key not in error.instance)
        return f"Missing required argument {missing}."
    rule = _rule(str(error.validator), expected, error.instance)
    if "propertyNames" in error.schema_path:
        return f"Invalid argument {name}: a key is {rule}."
    return f"Invalid argument {name}: {rule}."


FORMAT_EXAMPLES = {
    "uuid": "a UUID such as 019ab3c2-5f10-7c1e-9b2a-4c8d2e6f7a10",
    "date": "a date such as 2026-03-01",
    "date-time": "a date and time with an offset such as 2026-03-01T09:30:00Z",
}
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _rule(validator: str, expected: Any, value: object) -> str:
    """The rule a value breaks, in words."""
    match validator:
        case "type":
            wanted = " or ".join(expected) if isinstance(expected, list) else expected
            return f"must be of type {wanted}, not {JSON_TYPES.get(type(value), 'null')}"
        case "maxLength":
            return f"longer than {expected} characters"
        case "minLength":
            return "must not be empty" if expected == 1 else f"shorter than {expected} characters"
        case "minimum" | "maximum":
            return f"must be at {'least' if validator == 'minimum' else 'most'} {expected}"
        case "enum":
            return f"must be one of {', '.join(map(str, expected))}"
        case "format":
            return f"not {FORMAT_EXAMPLES.get(expected, expected)}"
        case "pattern":
            return f"must match {expected}"
        case "maxProperties":
            return f"more than {expected} entries"
    return f"breaks `{validator}: {expected}`"


@dataclass(frozen=True, slots=True)
class _Tool:
    spec: ToolSpec
    validator: Draft202012Validator
    run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _answer(result: dict[str, Any]) -> types.CallToolResult:
    text = _dumps(result)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text.decode())], structured_content=orjson.loads(text)
    )


def may_read(caller: Caller) -> bool:
    """Every scope from `read` up may call Sophia's tools."""
    return caller.has_scope("read")


class SophiaTools:
    """The provider of Sophia's own tools (read-only), over the database; `embed`, when given,
    lets `semantic_search` search by meaning beside words."""

    def __init__(self, settings: Settings, database: Database, embed: Embed | None = None) -> None:
        self.settings = settings
        self.database = database
        self.embed = embed
        runners = {
            "search_records": self._search_records,
            "get_record": self._get_record,
            "semantic_search": self._semantic_search,
            "active_deals": self._active_deals,
            "pipeline": self._analytics(analytics.pipeline, "stages"),
            "win_rate": self._analytics(analytics.win_rate, "win_rate"),
            "velocity": self._analytics(analytics.velocity, "velocity"),
            "sentiment_trend": self._analytics(analytics.sentiment, "weeks", trend=True),
            "topic_trend": self._analytics(analytics.topics, "weeks", trend=True),
            "record_predictions": self._record_predictions,
        }
        self._tools = {
            spec.name: _Tool(
                spec, Draft202012Validator(spec.input_schema, format_checker=FORMATS), runners[spec.name]
            )
            for spec in TOOLS
        }

    @property
    def name(self) -> str:
        return "sophia"

    async def list_tools(self, caller: Caller) -> list[types.Tool]:
        if not may_read(caller):
            return []
        return [tool.spec.tool() for tool in self._tools.values()]

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        if not may_read(caller):
            return tool_error(
                f"Sophia's tools need an API key with the `read` scope; this caller's is `{caller.scope}`."
            )
        tool = self._tools.get(name)
        if tool is None:
            shown = printable(name[:100])
            return tool_error(f"Unknown tool `{shown}`; Sophia's tools are: {', '.join(self._tools)}.")
        problem = self._check(tool, arguments)
        if problem is not None:
            return tool_error(problem)
        try:
            return _answer(await tool.run(arguments or {}))
        except BadArgument as error:
            return tool_error(str(error))
        except Invalid as error:
            return tool_error(_invalid(error))
        except NotFound as error:
            return tool_error(error.detail)
        except Unavailable as error:
            raise ToolUnavailable(error.detail) from error

    @staticmethod
    def _check(tool: _Tool, arguments: object) -> str | None:
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return "Arguments must be a JSON object."
        found = document_problem(arguments, ARGUMENT_DEPTH)
        if found is not None:
            where, problem = found
            return f"Invalid argument `{describe(where)}`: {problem}."
        error = best_match(tool.validator.iter_errors(arguments))
        return None if error is None else _problem(error)

    async def _search_records(self, arguments: dict[str, Any]) -> dict[str, Any]:
        where = _record_filter(arguments)
        limit = int(arguments.get("limit", 20))
        fingerprint = filter_fingerprint(where)
        after = decode_cursor(arguments["cursor"], fingerprint) if "cursor" in arguments else None
        timeout_s = self.settings.db_list_timeout_s
        async with self.database.connection() as connection:
            try:
                rows = await catalog.list_page(connection, where, after, limit + 1, timeout_s=timeout_s)
            except TimeoutError:
                raise Unavailable(
                    f"The records query ran past its {timeout_s:g} s limit and was cancelled; "
                    "narrow its filters (source_system, kind, updated_since)."
                ) from None
        cuts: list[str] = []
        records = [_cut_record(orjson.loads(row.json), LIST_TEXT_CHARS, cuts) for row in rows[:limit]]
        room = MAX_RESULT_CHARS - ENVELOPE_RESERVE
        items, cut = _fit_items(records, room, _fit_record)
        more = len(items) < len(records) or len(rows) > limit
        next_cursor = encode_cursor(rows[len(items) - 1].id, fingerprint) if more and items else None
        return {"items": items, "next_cursor": next_cursor, **_notes(cut, bool(cuts), _how(next_cursor))}

    async def _get_record(self, arguments: dict[str, Any]) -> dict[str, Any]:
        async with self.database.connection() as connection:
            stored = await catalog.get(connection, UUID(arguments["id"]))
        cuts: list[str] = []
        record = _cut_record(orjson.loads(stored.json), RECORD_TEXT_CHARS, cuts)
        room = MAX_RESULT_CHARS - ENVELOPE_RESERVE
        fitted = _fit_record(record, room) if _size(record) > room else record
        return {"record": fitted, **_notes(fitted is not record, bool(cuts), "Its data is cut.")}

    async def _semantic_search(self, arguments: dict[str, Any]) -> dict[str, Any]:
        query: str = arguments["query"]
        k = int(arguments.get("k", 10))
        where = _record_filter(arguments.get("filters", {}))
        fingerprint = filter_fingerprint("semantic_search", query, where)
        offset = _decode_offset_cursor(arguments["cursor"], fingerprint) if "cursor" in arguments else 0
        depth = min(offset + k + 1, MAX_SEARCH_DEPTH)
        embedding = None if self.embed is None else (await self.embed([query]))[0]
        candidates = max(40, depth * CANDIDATES_PER_RESULT)
        async with self.database.connection() as connection, connection.transaction():
            hits = await search.hybrid(connection, query, embedding, where, depth, candidates)
        cuts: list[str] = []
        page = [
            {
                "record": _cut_record(orjson.loads(hit.json), LIST_TEXT_CHARS, cuts),
                "score": hit.score,
                "semantic_rank": hit.semantic_rank,
                "lexical_rank": hit.lexical_rank,
            }
            for hit in hits[offset : offset + k]
        ]
        room = MAX_RESULT_CHARS - ENVELOPE_RESERVE
        items, cut = _fit_items(page, room, _fit_hit)
        following = offset + len(items)
        more = (len(items) < len(page) or len(hits) > offset + k) and following < MAX_SEARCH_DEPTH
        next_cursor = _offset_cursor(following, fingerprint) if more else None
        result = {
            "mode": "lexical" if embedding is None else "hybrid",
            "items": items,
            "next_cursor": next_cursor,
            **_notes(cut, bool(cuts), _how(next_cursor)),
        }
        if embedding is None:
            lexical = "Words only (full text): no embedding model is configured, so meaning is not searched."
            result["note"] = f"{lexical} {result.get('note', '')}".strip()
        return result

    async def _active_deals(self, arguments: dict[str, Any]) -> dict[str, Any]:
        sort: str = arguments.get("sort", "amount")
        order: str = arguments.get("order", "desc")
        limit = int(arguments.get("limit", 20))
        owners = {name: arguments.get(name) for name in ("source_system", "owner", "pipeline")}
        fingerprint = filter_fingerprint("active_deals", sort, order, *owners.values())
        if "cursor" in arguments and "offset" in arguments:
            raise BadArgument("Invalid argument `cursor`: give `offset` or `cursor`, not both.")
        if "cursor" in arguments:
            offset = _decode_offset_cursor(arguments["cursor"], fingerprint)
        else:
            offset = int(arguments.get("offset", 0))
        async with self.database.connection() as connection:
            rows = await views.active_deals_table(
                connection, sort, order == "desc", offset, limit + 1, **owners
            )
        cuts: list[str] = []
        deals = [_cut(row, LIST_TEXT_CHARS, None, cuts) for row in rows[:limit]]
        room = MAX_RESULT_CHARS - ENVELOPE_RESERVE
        items, cut = _fit_items(deals, room, lambda deal, room: _shrink(deal, room, TEXT_STEPS))
        more = len(items) < len(deals) or len(rows) > limit
        next_cursor = _offset_cursor(offset + len(items), fingerprint) if more else None
        return {
            "items": items,
            "offset": offset,
            "next_cursor": next_cursor,
            **_notes(cut, bool(cuts), _how(next_cursor)),
        }

    def _analytics(
        self, query: Callable[[Any, Any], Awaitable[Any]], key: str, *, trend: bool = False
    ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def run(arguments: dict[str, Any]) -> dict[str, Any]:
            since, until = _day(arguments.get("from")), _day(arguments.get("to"))
            analytics.check_range(since, until)
            source_system = arguments.get("source_system")
            where: analytics.Filters | analytics.TrendFilters
            if trend:
                where = analytics.TrendFilters(since, until, source_system, arguments.get("kind"))
            else:
                where = analytics.Filters(
                    since, until, source_system, arguments.get("owner"), arguments.get("pipeline")
                )
            async with self.database.connection() as connection:
                fresh = await analytics.as_of(connection)
                result = await query(connection, where)
            return fit_analytics({"as_of": fresh, key: result})

        return run

    async def _record_predictions(self, arguments: dict[str, Any]) -> dict[str, Any]:
        record_id = UUID(arguments["id"])
        async with self.database.connection() as connection:
            stored = await catalog.get(connection, record_id)  # NotFound for an unknown id
            predictions = await enrichment.predictions_of(connection, record_id)
        cuts: list[str] = []
        tasks = {
            task: {
                "model_version": row["model_version"],
                "record_version": row["record_version"],
                "prediction": _cut(row["prediction"], LIST_TEXT_CHARS, None, cuts),
                "updated_at": row["updated_at"],
            }
            for task, row in predictions.items()
        }
        room = (MAX_RESULT_CHARS - ENVELOPE_RESERVE - _size(list(tasks))) // max(1, len(tasks))
        shrunk = False
        for task in tasks.values():
            if _size(task) > room:
                envelope = _size({**task, "prediction": {}}) - 2
                task["prediction"] = _shrink(task["prediction"], room - envelope, DOCUMENT_STEPS)
                shrunk = True
        return {
            "record_id": record_id,
            "record_version": stored.version,
            "predictions": tasks,
            **_notes(shrunk, bool(cuts), "Each task's prediction is cut."),
        }


def fit_analytics(result: dict[str, Any]) -> dict[str, Any]:
    """An analytics answer whose lists are cut to the budget, the longest first: the newest weeks
    and months kept, the first stages and owners; `omitted` says how many of each were left out."""
    lists: list[tuple[dict[str, Any], str, bool]] = []  # (holder, key, keep the last ones)
    for key, value in result.items():
        if key in ("weeks", "stages") and isinstance(value, list):
            lists.append((result, key, key == "weeks"))
        if key == "win_rate" and isinstance(value, dict):
            lists += [(value, "by_owner", False), (value, "by_month", True)]
    omitted: dict[str, int] = {}
    limit = MAX_RESULT_CHARS - ENVELOPE_RESERVE
    while lists and _size(result) > limit:
        holder, key, keep_last = max(lists, key=lambda entry: len(entry[0][entry[1]]))
        items = holder[key]
        if not items:
            break
        drop = max(1, len(items) // 10)
        holder[key] = items[drop:] if keep_last else items[:-drop]
        omitted[key] = omitted.get(key, 0) + drop
    answer = {**result, **_notes(bool(omitted), False, "Narrow `from`/`to` or the filters for the rest.")}
    if omitted:
        answer["omitted"] = omitted
    return answer


def _invalid(error: Invalid) -> str:
    """An `Invalid` raised below the schema (a cursor, a range), naming the argument."""
    located: list[FieldError] = error.errors
    if not located:
        return error.detail
    name = located[0].location[-1]
    return f"Invalid argument `{name}`: {error.detail}"
