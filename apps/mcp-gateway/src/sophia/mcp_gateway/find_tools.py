"""`find_tools`: the gateway's own tool for an agent facing more tools than its context should
hold. It ranks every tool the caller may call by how well its name and description answer a
question: by meaning with Sophia's embedding model when the gateway runs it (the texts' vectors are
kept per text), by words otherwise (BM25 over name and description, the name counting double).
`tools/list` shows at most `mcp_list_max_tools` tools; the others stay callable by name, and
`find_tools` finds them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
import orjson

from sophia.core.documents import printable
from sophia.mcp_gateway.providers import Caller, tool_error

NAME = "find_tools"
PROVIDER = "gateway"
MAX_QUERY = 1000
MAX_LIMIT = 50
MAX_DESCRIPTION = 600
"""A found tool's description is cut here: the agent reads a shortlist, not the manuals."""
MAX_VECTORS = 20_000
_WORD = re.compile(r"[a-z0-9]+")
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]

TOOL = types.Tool(
    name=NAME,
    title="Find tools",
    description=(
        "Search every tool this gateway offers you (Sophia's and the federated servers', which may "
        "be more than tools/list shows) by what you want to do; returns the best matches with "
        "their input schemas, callable by name at once."
    ),
    input_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["query"],
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10},
        },
    },
    output_schema={
        "type": "object",
        "required": ["mode", "tools"],
        "properties": {
            "mode": {"enum": ["meaning", "words"]},
            "tools": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "score"],
                    "properties": {
                        "name": {"type": "string"},
                        "title": {"type": ["string", "null"]},
                        "description": {"type": ["string", "null"]},
                        "input_schema": {"type": "object"},
                        "read_only": {"type": ["boolean", "null"]},
                        "score": {"type": "number"},
                    },
                },
            },
        },
    },
    annotations=types.ToolAnnotations(
        title="Find tools", read_only_hint=True, idempotent_hint=True, open_world_hint=False
    ),
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("_", " "))


def lexical_scores(query: str, tools: list[types.Tool]) -> list[float]:
    """BM25 (k1 1.2, b 0.75) of each tool's name (twice) and description against the query."""
    documents = [
        words(f"{tool.name} {tool.name} {tool.title or ''} {tool.description or ''}") for tool in tools
    ]
    if not documents:
        return []
    average = sum(map(len, documents)) / len(documents) or 1.0
    terms = set(words(query))
    having = {term: sum(term in document for document in documents) for term in terms}
    scores = []
    for document in documents:
        counts = Counter(document)
        score = 0.0
        for term in terms:
            if not counts[term]:
                continue
            idf = math.log(1 + (len(documents) - having[term] + 0.5) / (having[term] + 0.5))
            tf = counts[term] * 2.2 / (counts[term] + 1.2 * (0.25 + 0.75 * len(document) / average))
            score += idf * tf
        scores.append(score)
    return scores


class ToolFinder:
    """The `gateway` provider: `find_tools` over what `visible(caller)` lists."""

    name = PROVIDER

    def __init__(self, visible: Callable[[Caller], Awaitable[list[types.Tool]]], embed: Embed | None = None):
        self.visible = visible
        self.embed = embed
        self._vectors: dict[str, list[float]] = {}

    async def list_tools(self, caller: Caller) -> list[types.Tool]:
        return [TOOL]

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        query, limit = arguments.get("query"), arguments.get("limit", 10)
        unknown = sorted(set(arguments) - {"query", "limit"})
        problem = (
            f"unknown argument(s): {', '.join(printable(name)[:64] for name in unknown[:5])}"
            + (f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else "")
            if unknown
            else "`query` is a string of 1 to 1000 characters"
            if not isinstance(query, str) or not 0 < len(query.strip()) <= MAX_QUERY or "\x00" in query
            else f"`limit` is an integer from 1 to {MAX_LIMIT}"
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT
            else None
        )
        if problem is not None:
            return tool_error(problem)
        assert isinstance(query, str)
        tools = [tool for tool in await self.visible(caller) if tool.name != NAME]
        mode, scores = await self._scores(query, tools)
        ranked = sorted(
            zip(scores, range(len(tools)), tools, strict=True), key=lambda item: (-item[0], item[1])
        )
        found = [
            {
                "name": tool.name,
                "title": tool.title,
                "description": (tool.description or "")[:MAX_DESCRIPTION] or None,
                "input_schema": tool.input_schema,
                "read_only": tool.annotations.read_only_hint if tool.annotations else None,
                "score": round(score, 4),
            }
            for score, _, tool in ranked[:limit]
            if score > 0 or mode == "meaning"
        ]
        answer = {"mode": mode, "tools": found}
        text = orjson.dumps(answer).decode()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=answer
        )

    async def _scores(self, query: str, tools: list[types.Tool]) -> tuple[str, list[float]]:
        if self.embed is None:
            return "words", lexical_scores(query, tools)
        texts = [
            f"{tool.name.replace('_', ' ')}: {tool.title or ''} {tool.description or ''}" for tool in tools
        ]
        if len(self._vectors) > MAX_VECTORS:  # descriptions changed often: start again
            self._vectors.clear()
        missing = [text for text in dict.fromkeys(texts) if text not in self._vectors]
        vectors = await self.embed([query, *missing])
        self._vectors.update(zip(missing, vectors[1:], strict=True))
        asked = vectors[0]
        return "meaning", [
            sum(a * b for a, b in zip(asked, self._vectors[text], strict=True)) for text in texts
        ]
