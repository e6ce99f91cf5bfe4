"""Adversarial input to the gateway over real HTTP (the SDK's transports, the lean path, the auth
middleware, the admin API, real upstream MCP servers): every bad input is answered with a JSON-RPC
error or an HTTP 4xx (or, for a tool's arguments, a tool error) that says what is wrong and where,
never a 5xx, a hang, a half-done action, or a cost to other callers.

What this file found in the gateway's own code is fixed, each a test below saying what was wrong: a
forged cursor's offset unbounded, unknown-argument errors of any size, `X-Forwarded-For` believed,
header values HTTP cannot carry written to the upstreams file, a valid JSON body called invalid (and
a timeout past a float a 500), a hung upstream's listing stalling Sophia's own tools, a result
breaking its tool's output schema passed on by the lean path. What it found
in the `mcp` SDK's transport (the gateway serves through it) is marked `SDK`: strict expected
failures, which turn red once the SDK answers well; one more, a documented limit, with its reason. The
tests starting MCP servers of their own are in the e2e tier, as the project's other upstream tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import upstream_servers
import yaml
from gateway_clients import serving
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp.server.lowlevel.server import Server
from waiting import eventually

from sophia.core.cursor import filter_fingerprint
from sophia.database import keys

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "adversary", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
META_JSON = json.dumps(META).encode()
ACCEPT = "application/json, text/event-stream"
UUID_ZERO = "00000000-0000-0000-0000-000000000000"


# --- what the tests send -------------------------------------------------------------------------


def modern_headers(method: str = "tools/call", name: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "MCP-Protocol-Version": MODERN,
        "MCP-Method": method,
    }
    if name is not None:
        headers["MCP-Name"] = name
    return headers


LEGACY_HEADERS = {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": LEGACY}


def modern_call(name: str, arguments: bytes, request_id: bytes = b"1") -> bytes:
    """A 2026-07-28 `tools/call` body, its arguments as raw JSON text (NaN, `\\ud800`, ...)."""
    params = b'{"name":' + json.dumps(name).encode() + b',"arguments":' + arguments + b',"_meta":' + META_JSON
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"method":"tools/call","params":' + params + b"}}"


def legacy_call(name: str, arguments: bytes, request_id: bytes = b"1") -> bytes:
    params = b'{"name":' + json.dumps(name).encode() + b',"arguments":' + arguments + b"}"
    return b'{"jsonrpc":"2.0","id":' + request_id + b',"method":"tools/call","params":' + params + b"}"


def rpc(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


class Gateway:
    """The gateway's URL and a client on it with a key."""

    def __init__(self, url: str, http: httpx.AsyncClient, secret: str) -> None:
        self.url = url
        self.http = http
        self.auth = {"Authorization": f"Bearer {secret}"}

    async def post(self, body: bytes | dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(self.url, content=rpc(body), headers={**headers, **self.auth})

    async def modern(self, name: str, arguments: bytes | Any, request_id: bytes = b"1") -> httpx.Response:
        raw = arguments if isinstance(arguments, bytes) else json.dumps(arguments).encode()
        return await self.post(modern_call(name, raw, request_id), modern_headers(name=_header_name(name)))

    async def legacy(self, name: str, arguments: bytes | Any, request_id: bytes = b"1") -> httpx.Response:
        raw = arguments if isinstance(arguments, bytes) else json.dumps(arguments).encode()
        return await self.post(legacy_call(name, raw, request_id), LEGACY_HEADERS)


def _header_name(name: str) -> str:
    from mcp.shared.inbound import encode_header_value

    return encode_header_value(name)


def tool_error(answer: httpx.Response) -> str:
    """The text of the tool error `answer` carries (asserting it is one)."""
    assert answer.status_code == 200, (answer.status_code, answer.text[:500])
    result = answer.json()["result"]
    assert result["isError"] is True, answer.text[:500]
    [block] = result["content"]
    return block["text"]


def rpc_error(answer: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC error `answer` carries, with a 4xx or 200 status (never a 5xx)."""
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    error = answer.json()["error"]
    assert isinstance(error["code"], int)
    assert isinstance(error["message"], str)
    return error


@pytest.fixture(scope="module")
async def gateway(settings, database) -> AsyncIterator[Gateway]:
    """A gateway of this module's own, with a key of its own (its rate is not the other tests')."""
    async with database.connection() as connection:
        _, secret = await keys.create(connection, "mcp-adversary", "read")
    own = settings.model_copy(update={"mcp_rate_per_s": 1000.0})
    async with serving(own) as url, httpx.AsyncClient(timeout=30) as http:
        yield Gateway(url, http, secret)


# --- envelopes -----------------------------------------------------------------------------------

NOT_ONE_REQUEST = [
    b'{"jsonrpc": "2.0", "id": 1, "method": ',
    b"",
    b"5",
    b'"ping"',
    b"null",
    b"[]",
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]',
    b'{"id":1,"method":"ping"}',
    b'{"jsonrpc":"1.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":5}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}',
]


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize("body", NOT_ONE_REQUEST)
async def test_a_body_that_is_not_one_json_rpc_request_is_a_4xx_json_rpc_error(gateway, era, body):
    headers = LEGACY_HEADERS if era == LEGACY else modern_headers("tools/list")
    answer = await gateway.post(body, headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    error = rpc_error(answer)
    assert error["code"] in (-32700, -32600, -32602)
    assert answer.json()["id"] is None


@pytest.mark.parametrize("era", [LEGACY, MODERN])
async def test_an_unknown_method_is_method_not_found_naming_it(gateway, era):
    body = {"jsonrpc": "2.0", "id": 1, "method": "no/such", "params": {"_meta": META}}
    answer = await gateway.post(body, LEGACY_HEADERS if era == LEGACY else modern_headers("no/such"))
    error = rpc_error(answer)
    assert error["code"] == -32601
    assert error["data"] == "no/such"


async def test_a_request_with_a_bad_id_runs_nothing(gateway, database):
    """Whatever the answer, a `tools/call` whose id is not a string or an integer is not run: no
    audit entry is written for it (one call after them, which is audited, shows the trail flushed)."""
    probes = []
    for era in (LEGACY, MODERN):
        for request_id in ({"a": 1}, 1.5, None):
            probe = f"probe_{secrets.token_hex(8)}"
            probes.append(probe)
            params: dict[str, Any] = {"name": "search_records", "arguments": {probe: 1}}
            if era == MODERN:
                params["_meta"] = META
            headers = LEGACY_HEADERS if era == LEGACY else modern_headers(name="search_records")
            body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
            assert (await gateway.post(body, headers)).status_code < 500
    control = f"probe_{secrets.token_hex(8)}"
    assert "Unknown argument" in tool_error(await gateway.modern("search_records", {control: 1}))

    async def audited(probe: str) -> int:
        async with database.connection() as connection:
            return await connection.fetchval(
                """SELECT count(*) FROM sophia_core.outbox
                   WHERE event_type = 'audit.entry' AND payload->'details'->'arguments' ? $1""",
                probe,
            )

    async def flushed() -> bool:
        return await audited(control) == 1

    await eventually(flushed, timeout_s=5, poll_s=0.02)
    assert [await audited(probe) for probe in probes] == [0] * len(probes)


SDK = pytest.mark.xfail(
    strict=True,
    reason="the official mcp SDK's Streamable HTTP transport answers this (its code, not the gateway's); "
    "strict: once the SDK answers it well, this test passes and the mark must go",
)
"""Defects of the `mcp` SDK's transport that the gateway serves through (docs/mcp.md, "Limits")."""


@SDK
@pytest.mark.parametrize("request_id", [{"a": 1}, 1.5, None])
async def test_a_legacy_request_whose_id_is_not_a_string_or_integer_is_refused_naming_the_id(
    gateway, request_id
):
    """DEFECT. The 2025-11-25 transport takes `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`
    for a notification (its model ignores the `id` it cannot type) and answers 202 with no body:
    the request is dropped without a word, and a client waits for an answer that never comes."""
    answer = await gateway.post({"jsonrpc": "2.0", "id": request_id, "method": "ping"}, LEGACY_HEADERS)
    assert answer.status_code == 400, (answer.status_code, answer.text)
    error = rpc_error(answer)
    assert error["code"] == -32600
    assert re.search(r"\bid\b", error["message"]), error["message"]


@SDK
@pytest.mark.parametrize("request_id", [{"a": 1}, 1.5, None])
async def test_a_modern_request_whose_id_is_not_a_string_or_integer_is_refused_naming_the_id(
    gateway, request_id
):
    """DEFECT (unclear error). The 2026-07-28 transport refuses it, 400 -32600, but says only "Body
    must be a single JSON-RPC request or notification object": not that the `id` is what is wrong."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": {"_meta": META}}
    error = rpc_error(await gateway.post(body, modern_headers("tools/list")))
    assert error["code"] == -32600
    assert re.search(r"\bid\b", error["message"]), error["message"]


@SDK
async def test_a_legacy_envelope_that_is_not_json_rpc_is_invalid_request_in_a_few_words(gateway):
    """DEFECT. `{"jsonrpc":"1.0",...}` is answered -32602 (invalid *params*) with pydantic's whole
    report as the message (6 errors, each with an errors.pydantic.dev URL); JSON-RPC 2.0 names
    -32600 Invalid Request for a body that is not a request object."""
    error = rpc_error(await gateway.post(b'{"jsonrpc":"1.0","id":1,"method":"ping"}', LEGACY_HEADERS))
    assert error["code"] == -32600, error
    assert "jsonrpc" in error["message"]
    assert len(error["message"]) < 300, error["message"]
    assert "pydantic.dev" not in error["message"]


WRONG_PARAMS = [
    (LEGACY, "tools/call", {"name": "get_record", "arguments": [1]}, "arguments"),
    (LEGACY, "tools/call", {"name": 5}, "name"),
    (LEGACY, "tools/call", {}, "name"),
    (LEGACY, "resources/read", {"uri": 5}, "uri"),
    (LEGACY, "tools/list", {"cursor": 5}, "cursor"),
    (MODERN, "tools/call", {"name": "get_record", "arguments": [1]}, "arguments"),
    (MODERN, "tools/call", {}, "name"),
    (MODERN, "tools/list", {"cursor": 5}, "cursor"),
]
"""(A 2026-07-28 `name` or `uri` of the wrong type is refused first, and clearly, by the check of
the `MCP-Name` header against it.)"""


@SDK
@pytest.mark.parametrize(("era", "method", "params", "field"), WRONG_PARAMS)
async def test_params_of_the_wrong_shape_are_named_in_the_error(gateway, era, method, params, field):
    """DEFECT (unclear error). Each is answered -32602 "Invalid request parameters" with `data`
    "": neither which parameter nor what is wrong with it."""
    if era == MODERN:
        params = {**params, "_meta": META}
        headers = modern_headers(method, "get_record" if method == "tools/call" else None)
    else:
        headers = LEGACY_HEADERS
    error = rpc_error(
        await gateway.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, headers)
    )
    assert error["code"] == -32602
    assert field in f"{error['message']} {error.get('data', '')}", error


@SDK
async def test_a_modern_parse_error_says_where(gateway):
    """DEFECT (unclear error). The 2026-07-28 transport answers a body that is not JSON with
    "Parse error" alone; the 2025-11-25 one says "EOF while parsing a value at line 1 column 38"."""
    garbled = b'{"jsonrpc": "2.0", "id": 1, "method": '
    legacy = rpc_error(await gateway.post(garbled, LEGACY_HEADERS))
    modern = rpc_error(await gateway.post(garbled, modern_headers(name="get_record")))
    assert "column" in legacy["message"]
    assert modern["code"] == -32700
    assert "column" in modern["message"] or "char" in modern["message"], modern


async def test_session_ids_and_session_verbs_are_answered_by_the_stateless_gateway(gateway):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for session in ("garbage", "0" * 200, secrets.token_hex(16)):
        answer = await gateway.post(ping, {**LEGACY_HEADERS, "Mcp-Session-Id": session})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == {}
    ended = await gateway.http.delete(gateway.url, headers={**gateway.auth, **LEGACY_HEADERS})
    assert ended.status_code == 405
    assert "Session termination not supported" in rpc_error(ended)["message"]
    again = await gateway.post(ping, {**LEGACY_HEADERS, "Mcp-Session-Id": "garbage"})
    assert again.status_code == 200
    streamed = await gateway.http.get(gateway.url, headers={**gateway.auth, **modern_headers("tools/list")})
    assert streamed.status_code == 405


# --- sizes, numbers, nesting ---------------------------------------------------------------------


async def test_a_body_just_under_the_limit_is_answered_and_one_just_over_is_413(gateway):
    def ping(padding: int) -> bytes:
        return b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"x":"' + b"a" * padding + b'"}}}'

    limit = 4 * 1024 * 1024
    under = await gateway.post(ping(limit - 100), LEGACY_HEADERS)
    over = await gateway.post(ping(limit), LEGACY_HEADERS)
    past_the_lean_path = await gateway.modern("search_records", {"kind": "a" * ((1 << 20) + 10)})
    assert under.status_code == 200, under.text[:300]
    assert over.status_code == 413
    assert "too large" in over.text.lower()
    assert "`kind`" in tool_error(past_the_lean_path)


@pytest.mark.parametrize("era", [LEGACY, MODERN])
async def test_numbers_json_cannot_hold_are_named_or_refused_never_a_5xx(gateway, era):
    send = gateway.legacy if era == LEGACY else gateway.modern
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        text = tool_error(await send("search_records", b'{"data":{"amount":' + literal + b"}}"))
        assert "`data.amount`" in text
        assert "NaN and Infinity" in text
    too_many = tool_error(await send("search_records", b'{"limit":' + b"9" * 40 + b"}"))
    assert "`limit`: must be at most 100" in too_many
    huge_id = await send("get_record", {"id": UUID_ZERO}, request_id=str(2**70).encode())
    assert huge_id.json()["id"] == 2**70  # echoed exactly
    digits = await send("search_records", b'{"limit":1' + b"0" * 5000 + b"}")  # past Python's int parsing
    assert digits.status_code == 400
    assert rpc_error(digits)["code"] == -32700


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize("depth", [20, 150, 300, 100_000])
async def test_deeply_nested_arguments_are_refused_cleanly(gateway, era, depth):
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    send = gateway.legacy if era == LEGACY else gateway.modern
    answer = await send("search_records", b'{"data":' + nested + b"}")
    if answer.status_code == 200:
        assert "nested deeper than 8 levels" in tool_error(answer)
    else:
        assert answer.status_code == 400
        assert rpc_error(answer)["code"] == -32700


# --- tool names and arguments --------------------------------------------------------------------


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize("name", ["no_such_tool", "get_record\x00", "get_record ", "GET_RECORD", "é" * 300])
async def test_a_tool_no_provider_offers_is_invalid_params_naming_it(gateway, era, name):
    send = gateway.legacy if era == LEGACY else gateway.modern
    error = rpc_error(await send(name, {}))
    assert error["code"] == -32602
    assert "Unknown tool" in error["message"]
    assert repr(name)[:40] in error["message"]
    assert len(error["message"]) < 1000


BAD_ARGUMENTS = [
    ("search_records", {"limit": "10"}, "`limit`: must be of type integer, not string"),
    ("search_records", {"limit": 5.5}, "`limit`: must be of type integer, not number"),
    ("search_records", {"data": {"a": [1]}}, "`data.a`"),
    ("search_records", {"colour": "red"}, "Unknown argument `colour`"),
    ("get_record", {}, "Missing required argument `id`"),
    ("get_record", {"id": 42}, "`id`: must be of type string"),
    ("get_record", {"id": UUID_ZERO, "extra": 1}, "Unknown argument `extra`"),
    ("semantic_search", {}, "Missing required argument `query`"),
    ("semantic_search", {"query": ["x"]}, "`query`: must be of type string"),
    ("semantic_search", {"query": "x", "filters": {"nope": 1}}, "`nope` in `filters`"),
    ("active_deals", {"order": "sideways"}, "`order`: must be one of asc, desc"),
    ("active_deals", {"offset": -1}, "`offset`: must be at least 0"),
    ("active_deals", {"offset": 1, "cursor": "abc"}, "give `offset` or `cursor`, not both"),
    ("pipeline", {"from": 20260101}, "`from`: must be of type string"),
    ("pipeline", {"owner": ""}, "`owner`: must not be empty"),
    ("win_rate", {"to": "2026-02-30"}, "`to`: not a date"),
    ("velocity", {"pipeline": None}, "`pipeline`: must be of type string, not null"),
    ("sentiment_trend", {"kind": "deal"}, "`kind`: must be one of call, message"),
    ("topic_trend", {"source_system": "Not An Identifier"}, "`source_system`: must match"),
    ("record_predictions", {}, "Missing required argument `id`"),
    ("record_predictions", {"id": "not-a-uuid"}, "`id`: not a UUID"),
    ("find_tools", {}, "`query`"),
    ("find_tools", {"query": "x", "limit": 0}, "`limit`"),
    ("find_tools", {"query": "x", "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("tool", "arguments", "named"), BAD_ARGUMENTS, ids=lambda value: str(value)[:30])
async def test_a_bad_argument_to_each_tool_is_a_tool_error_naming_it_over_the_wire(
    gateway, tool, arguments, named
):
    assert named in tool_error(await gateway.modern(tool, arguments))


TEXT_THAT_IS_NOT_TEXT = [
    (b'{"kind":"de\\u0000al"}', "`kind`: text may not contain NUL"),
    (b'{"kind":"\\ud800"}', "`kind`: holds a lone surrogate"),
    (b'{"data":{"stage":"open\\udfff"}}', "`data.stage`: holds a lone surrogate"),
    (b'{"data":{"a\\u0000b":"x"}}', "the key may not contain NUL"),
    (b'{"\\ud800":1}', "the key holds a lone surrogate"),
]


@pytest.mark.parametrize(("arguments", "named"), TEXT_THAT_IS_NOT_TEXT)
async def test_nul_and_lone_surrogates_in_arguments_are_tool_errors_naming_them(gateway, arguments, named):
    assert named in tool_error(await gateway.modern("search_records", arguments))


@SDK
async def test_a_lone_surrogate_argument_in_the_legacy_era_is_a_tool_error_naming_it(gateway):
    """DEFECT. The 2026-07-28 era answers `{"kind": "\\ud800"}` with a tool error naming `kind`
    (above); the 2025-11-25 transport refuses the whole request, -32700 "Parse error: unexpected
    end of hex escape at line 1 column N", which is not what is wrong (the escape is complete)
    and names no argument."""
    answer = await gateway.legacy("search_records", b'{"kind":"\\ud800"}')
    assert "`kind`: holds a lone surrogate" in tool_error(answer)


def offset_cursor(offset: int, *parts: object) -> str:
    """A cursor as `active_deals` issues them (its format is base64 text, its check an unkeyed hash)."""
    raw = f"o1.{offset}.{filter_fingerprint(*parts)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_a_tampered_cursor_with_an_offset_past_the_bound_is_refused_naming_the_cursor(gateway):
    """A cursor was checked for its shape and its filters, not for its offset: one carrying 2**63
    reached PostgreSQL, whose refusal was passed on as "PostgreSQL refused a value: DataError." (no
    argument named), and one past 10,000 skipped more deals than `offset` may. Its offset is held to
    `offset`'s bound now."""
    parts = ("active_deals", "amount", "desc", None, None, None)
    fits = await gateway.modern("active_deals", {"cursor": offset_cursor(10_000, *parts)})
    assert fits.json()["result"]["isError"] is False
    for offset in (10_001, 2**63 - 1, 2**63):
        past = tool_error(await gateway.modern("active_deals", {"cursor": offset_cursor(offset, *parts)}))
        assert "`cursor`" in past, past


async def test_an_unknown_argument_error_is_of_bounded_size(gateway):
    """Found here, fixed.
    It was so: An unknown-tool error is cut at 200 characters of the name and a result at 16,000
    characters, but an unknown-argument error names every unknown key: 50,000 of them (a 0.6 MB
    request) make a tool error of ~490 KB for the model's context (search_records' `_problem`,
    find_tools' `call_tool`); 250,000 keys, 2.6 MB, and a 0.4 s stall of the event loop."""
    arguments = {f"k{index}": 0 for index in range(5_000)}  # named whole, 49 KB of error
    for tool, extra in (("search_records", {}), ("find_tools", {"query": "x"})):
        text = tool_error(await gateway.modern(tool, {**arguments, **extra}))
        assert "k0" in text
        assert len(text) <= 16_000, (tool, len(text))


def _argument_values() -> st.SearchStrategy[Any]:
    texts = st.one_of(
        st.text(max_size=8),
        st.sampled_from(
            ["\x00", "2026-01-01", "2026-13-45", UUID_ZERO, "amount", "call", "o1.5.x", "é" * 70]
        ),
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        texts,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
        max_leaves=8,
    )


TOOL_ARGUMENTS = {
    "search_records": ["source_system", "kind", "updated_since", "data", "limit", "cursor"],
    "get_record": ["id"],
    "semantic_search": ["query", "k", "filters", "cursor"],
    "active_deals": ["sort", "order", "limit", "offset", "cursor", "source_system", "owner", "pipeline"],
    "pipeline": ["from", "to", "source_system", "owner", "pipeline"],
    "win_rate": ["from", "to", "source_system", "owner", "pipeline"],
    "velocity": ["from", "to", "source_system", "owner", "pipeline"],
    "sentiment_trend": ["from", "to", "source_system", "kind"],
    "topic_trend": ["from", "to", "source_system", "kind"],
    "record_predictions": ["id"],
    "find_tools": ["query", "limit"],
}


def _calls() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.sampled_from(sorted(TOOL_ARGUMENTS)).flatmap(
        lambda tool: st.tuples(
            st.just(tool),
            st.dictionaries(
                st.sampled_from([*TOOL_ARGUMENTS[tool], "extra"]), _argument_values(), max_size=4
            ),
        )
    )


@pytest.mark.load  # a second of hypothesis and a few hundred calls
async def test_fuzzed_tool_calls_are_answered_with_a_result_or_an_error_never_a_5xx(gateway):
    examples: list[tuple[str, dict[str, Any]]] = []

    @given(_calls())
    @hypothesis_settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def collect(call: tuple[str, dict[str, Any]]) -> None:
        examples.append(call)

    collect()
    for tool, arguments in examples:
        answer = await gateway.modern(tool, arguments)
        assert answer.status_code == 200, (tool, arguments, answer.status_code, answer.text[:300])
        result = answer.json()["result"]
        assert result["content"][0]["text"], (tool, arguments)
        if not result["isError"]:
            assert isinstance(result["structuredContent"], dict)


# --- who may call --------------------------------------------------------------------------------

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def made_up_key() -> str:
    return f"sk_{secrets.token_hex(4)}_{'A' * 43}"


@pytest.mark.parametrize(
    ("authorization", "said"),
    [
        (None, "Authorization: Bearer"),
        ("Bearer", "must be `Bearer <key>`"),
        ("Basic dXNlcjpwYXNz", "must be `Bearer <key>`"),
        ("Token sk_x", "must be `Bearer <key>`"),
        ("Bearer not-a-key", "not valid or has been revoked"),
    ],
)
async def test_a_missing_or_malformed_credential_is_a_401_saying_what_is_wrong(gateway, authorization, said):
    headers = {**LEGACY_HEADERS, **({"Authorization": authorization} if authorization else {})}
    answer = await gateway.http.post(gateway.url, json=PING, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert said in answer.json()["detail"]


@pytest.mark.load  # waits out the key memory: a third of a second
async def test_a_revoked_key_is_refused_within_its_memory_and_others_are_not(settings, database, api_keys):
    async with database.connection() as connection:
        key, secret = await keys.create(connection, "mcp-revoked", "read")
    async with serving(settings) as url, httpx.AsyncClient(timeout=10) as http:
        before = await http.post(
            url, json=PING, headers={**LEGACY_HEADERS, "Authorization": f"Bearer {secret}"}
        )
        async with database.connection() as connection:
            await keys.revoke(connection, key.prefix)
        await asyncio.sleep(settings.api_key_cache_ttl_s + 0.05)
        after = await http.post(
            url, json=PING, headers={**LEGACY_HEADERS, "Authorization": f"Bearer {secret}"}
        )
        other = await http.post(
            url, json=PING, headers={**LEGACY_HEADERS, "Authorization": f"Bearer {api_keys['read']}"}
        )
    assert before.status_code == 200
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    assert other.status_code == 200


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_another_key_does_not(settings, api_keys):
    slow = settings.model_copy(update={"mcp_rate_per_s": 1.0})  # bursts of 2
    flooder = {**LEGACY_HEADERS, "Authorization": f"Bearer {api_keys['write']}"}
    other = {**LEGACY_HEADERS, "Authorization": f"Bearer {api_keys['read']}"}
    async with serving(slow) as url, httpx.AsyncClient(timeout=10) as http:
        flood = [await http.post(url, json=PING, headers=flooder) for _ in range(6)]
        calm = await http.post(url, json=PING, headers=other)
    limited = [answer for answer in flood if answer.status_code == 429]
    assert limited
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "requests a second" in limited[0].json()["detail"]
    assert calm.status_code == 200


async def test_x_forwarded_for_does_not_lift_the_limit_on_failed_keys(settings):
    """Found here, fixed.
    It was so: A caller sending keys that fail is answered 429 after `auth_failure_limit` (20) of
    them from its address: the limit that keeps a flood of made-up keys from PostgreSQL. uvicorn
    trusts `X-Forwarded-For` from 127.0.0.1 by default (the gateway's `__main__` and the tests'
    `serving` keep that default) and the gateway binds to 127.0.0.1, so a local caller naming a new
    address on each request is never limited: 40 made-up keys, 40 lookups, 40 401s."""
    async with serving(settings) as url, httpx.AsyncClient(timeout=10) as http:
        statuses = [
            (
                await http.post(
                    url,
                    json=PING,
                    headers={
                        **LEGACY_HEADERS,
                        "Authorization": f"Bearer {made_up_key()}",
                        "X-Forwarded-For": f"10.0.0.{index}",
                    },
                )
            ).status_code
            for index in range(1, 41)
        ]
    assert 429 in statuses, statuses


async def test_a_flood_of_bad_keys_does_not_lock_out_another_callers_valid_key(settings, database):
    """Found here, fixed. Every agent of the default deployment reaches the gateway from 127.0.0.1;
    one that sent 20 bad keys got every other agent whose key was not in the 1 s memory answered
    429 for 10 s. A key of an active key's prefix is still checked (guesses at it limited by the
    prefix)."""
    async with database.connection() as connection:
        _, secret = await keys.create(connection, "mcp-innocent", "read")
    async with serving(settings) as url, httpx.AsyncClient(timeout=10) as http:
        for _ in range(21):
            await http.post(
                url, json=PING, headers={**LEGACY_HEADERS, "Authorization": f"Bearer {made_up_key()}"}
            )
        innocent = await http.post(
            url, json=PING, headers={**LEGACY_HEADERS, "Authorization": f"Bearer {secret}"}
        )
    assert innocent.status_code == 200, (innocent.status_code, innocent.text)


# --- the admin API ------------------------------------------------------------------------------


@pytest.fixture
async def admin_api(settings, api_keys, tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, str, Any]]:
    path = tmp_path / "upstreams.yaml"
    path.write_text("upstreams: []\n")
    own = settings.model_copy(update={"mcp_upstreams_file": path})
    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with serving(own) as url, httpx.AsyncClient(timeout=10, headers=headers) as http:
        yield http, url.removesuffix("/mcp") + "/admin/upstreams", path


async def test_the_admin_api_refuses_bad_entries_naming_them(admin_api):
    http, admin, path = admin_api
    answers = {
        "not json": await http.post(admin, content=b"{x"),
        "not an object": await http.post(admin, content=b"[]"),
        "bad name": await http.post(admin, json={"name": "a\x00", "url": "http://127.0.0.1:9/mcp"}),
        "a variable": await http.post(  # the gateway's own environment: the file's, not the API's
            admin, json={"name": "v", "url": "http://127.0.0.1:9/mcp", "headers": {"X": "${HOME}"}}
        ),
        "a command": await http.post(admin, json={"name": "c", "command": "sh", "args": ["-c", "id"]}),
        "too large": await http.post(admin, content=b'{"name":"' + b"a" * 70_000 + b'"}'),
        "bad verb": await http.post(admin + "/x:y:z"),
    }
    assert {label: answer.status_code for label, answer in answers.items()} == {
        "not json": 400,
        "not an object": 400,
        "bad name": 422,
        "a variable": 422,
        "a command": 422,
        "too large": 413,
        "bad verb": 404,
    }
    assert "field `name`" in answers["bad name"].json()["detail"]
    assert "`headers.X`" in answers["a variable"].json()["detail"]
    assert answers["a variable"].json()["errors"] == [
        {"location": ["headers", "X"], "message": "no `${NAME}` over the API"}
    ]
    assert "upstreams file" in answers["a command"].json()["detail"]
    assert yaml.safe_load(path.read_text()) == {"upstreams": []}  # nothing half-written


@pytest.mark.parametrize("value", ["v\r\nX-Injected: yes", "a\x00b", "line\nbreak"])
async def test_the_admin_api_refuses_a_header_value_http_cannot_carry(admin_api, value):
    """Found here, fixed.
    Was (bad input accepted). The entry is written (201) though no HTTP client can send the
    header: the upstream never opens, its tools silently leave the list, and an agent calling one
    is told "Unknown tool 'crlf__echo'". The schema's `strings` (upstreams.schema.json) takes any
    string; a header value with CR, LF or NUL should be 422 naming `headers.X-A`."""
    http, admin, _path = admin_api
    entry = {"name": "crlf", "url": "http://127.0.0.1:9/mcp", "headers": {"X-A": value}}
    answer = await http.post(admin, json=entry)
    assert answer.status_code == 422, (answer.status_code, answer.text)
    assert "headers.X-A" in answer.json()["detail"]


async def test_the_admin_api_does_not_call_valid_json_invalid_json(admin_api):
    """Found here, fixed.
    Was (unclear error). `{"timeout_s": 1000…0}` (an integer of 401 digits) is valid JSON;
    orjson reads it as a double, finds it infinite, and the answer is 400 "this is not valid JSON"
    (admin.py, `added`) where a 422 naming `timeout_s` was due."""
    http, admin, _ = admin_api
    body = b'{"name":"big","url":"http://127.0.0.1:9/mcp","timeout_s":1' + b"0" * 400 + b"}"
    answer = await http.post(admin, content=body)
    assert "not valid JSON" not in answer.json()["detail"], answer.text
    assert answer.status_code == 422


# --- upstreams that misbehave (e2e: MCP servers of their own) ------------------------------------

GARBAGE_TOOLS = (
    "html500",
    "badjson",
    "nullresult",
    "drop",
    "sse_garbage",
    "surrogate",
    "deep",
    "content_bad",
    "empty",
)


def garbage_server() -> Any:
    from mcp.server import MCPServer

    server = MCPServer("garbage", log_level="ERROR")
    for name in (*GARBAGE_TOOLS, "hang"):

        def tool(x: str = "") -> str:
            return "fine"

        server.add_tool(tool, name=name)
    return server


async def body_messages(receive: Any) -> list[Any]:
    """A request's body messages, up to the last (an upstream wrapper reads it, then replays it)."""
    read = []
    while True:
        message = await receive()
        read.append(message)
        if not message.get("more_body"):
            return read


def answering_garbage(app: Any) -> Any:
    """`app`, except that a `tools/call` of one of `GARBAGE_TOOLS` (or `hang`) is answered with
    what its name says."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        read = await body_messages(receive)
        request = json.loads(b"".join(message.get("body", b"") for message in read) or b"null")
        params = request.get("params") if isinstance(request, dict) else None
        name = (
            params.get("name") if isinstance(params, dict) and request.get("method") == "tools/call" else None
        )
        request_id = json.dumps(request.get("id") if isinstance(request, dict) else None).encode()

        async def answer(status: int, kind: bytes | None, body: bytes, *, cut: bool = False) -> None:
            headers = [(b"content-type", kind)] if kind else []
            if cut:
                headers.append((b"content-length", str(len(body) + 1000).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": cut})
            if cut:
                raise RuntimeError("the connection is dropped mid-answer")

        def result(text: bytes) -> bytes:
            return b'{"jsonrpc":"2.0","id":' + request_id + b',"result":' + text + b"}"

        deep = b'{"a":' * 400 + b"1" + b"}" * 400
        match name:
            case "html500":
                await answer(500, b"text/html", b"<html>oops</html>")
            case "badjson":
                await answer(200, b"application/json", b"{not json")
            case "nullresult":
                await answer(200, b"application/json", result(b"null"))
            case "drop":
                await answer(200, b"application/json", b'{"jsonrpc"', cut=True)
            case "sse_garbage":
                await answer(200, b"text/event-stream", b"event: message\ndata: {garbage\n\n")
            case "surrogate":
                await answer(
                    200, b"application/json", result(b'{"content":[{"type":"text","text":"\\ud800"}]}')
                )
            case "deep":
                await answer(
                    200, b"application/json", result(b'{"content":[],"structuredContent":' + deep + b"}")
                )
            case "content_bad":
                await answer(200, b"application/json", result(b'{"content":[{"type":"nope"}]}'))
            case "empty":
                await answer(200, None, b"")
            case "hang":
                await anyio.sleep_forever()
            case _:

                async def replay() -> Any:
                    return read.pop(0) if read else await receive()

                await app(scope, replay, send)

    return asgi


@pytest.mark.e2e
async def test_an_upstream_answering_garbage_is_a_tool_error_naming_it_and_others_keep_working(
    settings, api_keys, tmp_path
):
    with upstream_servers.serve_http(garbage_server(), wrap=answering_garbage) as upstream_url:
        path = tmp_path / "upstreams.yaml"
        entries = [
            {"name": "old", "url": upstream_url, "protocol": LEGACY, "timeout_s": 0.5, "attempts": 1},
            {"name": "new", "url": upstream_url, "protocol": MODERN, "timeout_s": 0.5, "attempts": 1},
        ]
        path.write_text(yaml.safe_dump({"upstreams": entries}))
        own = settings.model_copy(update={"mcp_upstreams_file": path})
        async with serving(own) as url, httpx.AsyncClient(timeout=30) as http:
            caller = Gateway(url, http, api_keys["read"])
            for prefix in ("old", "new"):
                for tool in (*GARBAGE_TOOLS, "hang"):
                    started = time.monotonic()
                    text = tool_error(await caller.modern(f"{prefix}__{tool}", {"x": "1"}))
                    assert text.startswith(f"{prefix}__{tool}"), text
                    assert time.monotonic() - started < 5
            answered = await caller.modern("get_record", {"id": UUID_ZERO})
    assert "No record with id" in tool_error(answered)


def hanging_on_tools_list(app: Any) -> Any:
    """`app`, except that `tools/list` is taken and never answered (a wedged upstream)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        read = await body_messages(receive)
        if b'"tools/list"' in b"".join(message.get("body", b"") for message in read):
            await anyio.sleep_forever()

        async def replay() -> Any:
            return read.pop(0) if read else await receive()

        await app(scope, replay, send)

    return asgi


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", [LEGACY, MODERN])
async def test_a_hung_upstream_listing_does_not_stall_sophias_own_tools(
    settings, api_keys, tmp_path, protocol
):
    """Found here, fixed. Was (another caller disturbed). A call names its tool; `Router.owner` lists *every*
    provider to find its owner (router.py, `owner` -> `list_tools` -> `asyncio.gather`) when the
    caller's index is missing, 5 s old or lacks the name. An upstream whose `tools/list` never
    answers holds each such call of Sophia's own `get_record` for the upstream's `timeout_s`
    (30 s by default; 1 s here), every 5 s, for every caller."""
    with upstream_servers.serve_http(
        upstream_servers.build_server(), wrap=hanging_on_tools_list
    ) as upstream_url:
        path = tmp_path / "upstreams.yaml"
        entries = [{"name": "mute", "url": upstream_url, "protocol": protocol, "timeout_s": 1}]
        path.write_text(yaml.safe_dump({"upstreams": entries}))
        own = settings.model_copy(update={"mcp_upstreams_file": path})
        async with serving(own) as url, httpx.AsyncClient(timeout=30) as http:
            caller = Gateway(url, http, api_keys["read"])
            started = time.monotonic()
            answered = await caller.modern("get_record", {"id": UUID_ZERO})
            took = time.monotonic() - started
    assert "No record with id" in tool_error(answered)
    assert took < 0.5, f"Sophia's get_record waited {took:.2f} s for another provider's listing"


class Served:
    """A low-level `Server` in the shape `upstream_servers.serve_http` serves."""

    def __init__(self, server: Server[Any]) -> None:
        self.server = server

    def streamable_http_app(self) -> Any:
        return self.server.streamable_http_app()


@pytest.mark.e2e
async def test_a_result_breaking_its_output_schema_is_a_tool_error_in_either_era(
    settings, api_keys, tmp_path
):
    """Found here, fixed. Through a 2025-11-25 upstream (the SDK's client) the result is a tool error
    naming the output schema; through a 2026-07-28 one (the direct path, direct.py `_result`, which
    validated the result's shape but not the tool's output schema) it reached the agent untouched,
    `isError: false`, and the agent's SDK client raised RuntimeError on it."""
    with upstream_servers.serve_http(Served(upstream_servers.breaking_its_output_schema())) as upstream_url:
        path = tmp_path / "upstreams.yaml"
        entries = [
            {"name": "old", "url": upstream_url, "protocol": LEGACY},
            {"name": "new", "url": upstream_url, "protocol": MODERN},
        ]
        path.write_text(yaml.safe_dump({"upstreams": entries}))
        own = settings.model_copy(update={"mcp_upstreams_file": path})
        async with serving(own) as url, httpx.AsyncClient(timeout=30) as http:
            caller = Gateway(url, http, api_keys["read"])
            old = await caller.modern("old__count", {})
            new = await caller.modern("new__count", {})
    assert "structured content" in tool_error(old) or "output schema" in tool_error(old)
    assert new.json()["result"]["isError"] is True, new.text
