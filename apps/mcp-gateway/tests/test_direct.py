"""The lean path of `tools/call` to 2026-07-28 HTTP upstreams (`sophia.mcp_gateway.direct`):
against the test server (answers alike on both paths, and which path each call took, seen by the
server) and against plain HTTP servers answering what a broken upstream could."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp.web
import pytest
import upstream_servers
from upstream_helpers import ADMIN, configured, text

from sophia.engines.process import free_port
from sophia.mcp_gateway.direct import DirectCalls, DirectFailure, Refused, env_proxy, schema_needs_headers
from sophia.mcp_gateway.providers import PROGRESS, ToolUnavailable
from sophia.mcp_gateway.upstreams import Upstream

pytestmark = pytest.mark.e2e  # MCP servers of its own


@pytest.fixture(scope="module")
def watched() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The test server over HTTP, and (Mcp-Method, User-Agent) of each POST it got."""
    seen: list[tuple[str, str]] = []

    def wrap(app: Any) -> Any:
        async def watching(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                headers = dict(scope["headers"])
                seen.append(
                    (headers.get(b"mcp-method", b"").decode(), headers.get(b"user-agent", b"").decode())
                )
            await app(scope, receive, send)

        return watching

    with upstream_servers.serve_http(upstream_servers.build_server(), wrap=wrap) as url:
        yield url, seen


@pytest.fixture
async def closing() -> AsyncIterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for upstream in made:
        await upstream.close()


def calls_by(seen: list[tuple[str, str]], client: str) -> int:
    return sum(method == "tools/call" and client in agent for method, agent in seen)


async def test_plain_calls_go_direct_and_answer_what_the_sdk_client_answers(
    watched: tuple[str, list[tuple[str, str]]], closing: list[Upstream]
) -> None:
    url, seen = watched
    modern = Upstream(configured("modern", url=url))
    legacy = Upstream(configured("legacy", url=url, protocol="2025-11-25"))  # the SDK's client, always
    closing += [modern, legacy]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("echo", {"text": "héllo \u2028 wörld"}),
        ("echo", {"text": "long " * 100_000}),  # an answer of half a megabyte, read whole
        ("add", {"a": 2, "b": 3}),
        ("add", {"a": 2**70, "b": 1}),  # past 64 bits: exact on both paths
        ("add", {"a": "two", "b": 3}),  # refused by the tool's own validation: a tool error
        ("fail", {}),
    ]
    direct_before = calls_by(seen, "aiohttp")

    for tool, arguments in cases:
        fast = await modern.call_tool(f"modern__{tool}", arguments, ADMIN)
        slow = await legacy.call_tool(f"legacy__{tool}", arguments, ADMIN)
        assert (fast.content, fast.structured_content, fast.is_error) == (
            slow.content,
            slow.structured_content,
            slow.is_error,
        ), tool

    assert modern.session is not None
    assert modern.session.client is not None
    assert modern.session.client.protocol_version == "2026-07-28"
    assert calls_by(seen, "aiohttp") - direct_before == len(cases)  # the modern ones, not the legacy


async def test_a_call_asking_for_progress_takes_the_sdk_client_and_gets_it(
    watched: tuple[str, list[tuple[str, str]]], closing: list[Upstream]
) -> None:
    url, seen = watched
    upstream = Upstream(configured("progress", url=url))
    closing.append(upstream)
    reports: list[float] = []

    async def report(progress: float, total: float | None, message: str | None) -> None:
        reports.append(progress)

    before = calls_by(seen, "httpx2")
    token = PROGRESS.set(report)
    try:
        counted = await upstream.call_tool("progress__count", {"steps": 3}, ADMIN)
    finally:
        PROGRESS.reset(token)

    assert text(counted) == "3"
    assert reports == [1, 2, 3]
    assert calls_by(seen, "httpx2") == before + 1


async def test_a_server_gone_after_its_session_opened_makes_a_direct_call_unavailable(
    closing: list[Upstream],
) -> None:
    port = free_port()
    with upstream_servers.serve_http(upstream_servers.build_server(), port=port) as url:
        upstream = Upstream(configured("gone", url=url, timeout_s=2, attempts=2))
        closing.append(upstream)
        assert text(await upstream.call_tool("gone__echo", {"text": "up"}, ADMIN)) == "up"

    with pytest.raises(ToolUnavailable, match="gone: "):
        await upstream.call_tool("gone__echo", {"text": "down"}, ADMIN)


@pytest.fixture
async def broken() -> AsyncIterator[tuple[str, dict[str, aiohttp.web.Response]]]:
    """A plain HTTP server on loopback answering each POST with the response set for the tool
    named in its `Mcp-Name` header; its URL and that table."""
    answers: dict[str, aiohttp.web.Response] = {}

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return answers[request.headers["Mcp-Name"]]

    app = aiohttp.web.Application()
    app.router.add_post("/mcp", answer)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/mcp", answers
    await runner.cleanup()


def sse(*events: str) -> aiohttp.web.Response:
    body = "".join(f"event: message\r\ndata: {event}\r\n\r\n" for event in events)
    return aiohttp.web.Response(body=body.encode(), content_type="text/event-stream")


def json_body(text: str, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=text.encode(), status=status, content_type="application/json")


RESULT = '{"content":[{"type":"text","text":"done"}],"isError":false,"resultType":"complete"}'


async def test_what_a_broken_upstream_answers_is_an_error_or_an_outage_never_a_crash(
    broken: tuple[str, dict[str, aiohttp.web.Response]],
) -> None:
    url, answers = broken
    direct = DirectCalls(url, {"Authorization": "Bearer upstream-secret"})
    answers.update(
        plain=json_body('{"jsonrpc":"2.0","id":1,"result":' + RESULT + "}"),
        streamed=sse(
            '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}',
            '{"jsonrpc":"2.0","id":2,"result":' + RESULT + "}",
        ),
        refused=json_body('{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"no such tool"}}', 400),
        proxy_page=aiohttp.web.Response(
            text="<html>bad gateway</html>", status=502, content_type="text/html"
        ),
        not_mcp=json_body('{"jsonrpc":"2.0","id":5,"result":{"content":"not a list"}}'),
        other_id=json_body('{"jsonrpc":"2.0","id":999,"result":' + RESULT + "}"),
        stream_cut=sse('{"jsonrpc":"2.0","method":"notifications/message","params":{}}'),
        long_line=sse(
            '{"jsonrpc":"2.0","id":8,"result":{"content":[{"type":"text","text":"'
            + "y" * 700_000
            + '"}],"isError":false}}'
        ),
        garbled=json_body("{not json"),
        failed_result=json_body('{"jsonrpc":"2.0","id":10,"result":' + RESULT + "}", 500),
        moved=aiohttp.web.Response(status=307, headers={"Location": "http://127.0.0.1:1/elsewhere"}),
    )
    try:  # the calls in order: the answers above that carry an id carry the call's
        assert text_of(await direct.call("plain", {})) == "done"
        assert text_of(await direct.call("streamed", {})) == "done"
        with pytest.raises(Refused, match="no such tool"):
            await direct.call("refused", {})
        with pytest.raises(Refused, match="HTTP 502 with text/html"):  # answered: a tool error
            await direct.call("proxy_page", {})
        with pytest.raises(ValueError, match="content"):  # pydantic's ValidationError
            await direct.call("not_mcp", {})
        with pytest.raises(Refused, match="no answer"):
            await direct.call("other_id", {})
        with pytest.raises(DirectFailure, match="ended without the answer"):  # cut off: an outage
            await direct.call("stream_cut", {})
        assert text_of(await direct.call("long_line", {})) == "y" * 700_000  # one SSE line of 700 kB
        with pytest.raises(Refused, match="not JSON"):
            await direct.call("garbled", {})
        with pytest.raises(Refused, match="HTTP 500"):
            await direct.call("failed_result", {})
        with pytest.raises(Refused, match="HTTP 307"):  # a redirect is not followed
            await direct.call("moved", {})
    finally:
        await direct.close()

    nowhere = DirectCalls(f"http://127.0.0.1:{free_port()}/mcp", {})
    with pytest.raises(DirectFailure):
        await nowhere.call("echo", {})
    await nowhere.close()
    with pytest.raises(DirectFailure, match="closed"):  # no pool opened again once closed
        await nowhere.call("echo", {})


def text_of(result: Any) -> str:
    return result.content[0].text


def test_the_environments_proxy_is_honoured_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("http://upstream.example/mcp") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert env_proxy("https://upstream.example/mcp") == "http://proxy.example:3128"
    assert env_proxy("http://upstream.example/mcp") is None  # no proxy named for plain http
    monkeypatch.setenv("NO_PROXY", "upstream.example")
    assert env_proxy("https://upstream.example/mcp") is None
    assert DirectCalls("https://other.example/mcp", {}).proxy == "http://proxy.example:3128"


def test_a_tool_whose_arguments_go_in_headers_is_left_to_the_sdks_client() -> None:
    annotated = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
    plain = {"type": "object", "properties": {"region": {"type": "string"}}}
    assert schema_needs_headers(annotated)
    assert not schema_needs_headers(plain)
    assert not schema_needs_headers(None)
