"""The gateway federating real upstream MCP servers (a stdio command and a Streamable HTTP server),
driven by the SDK's `Client` in both eras; and two gateway processes answering one client in turn.
The e2e tier: the upstreams are processes of their own."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import upstream_servers
import yaml
from gateway_clients import ERAS, connected, serving
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from upstream_helpers import SERVER_SCRIPT, text

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstreams_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("upstreams")
    with upstream_servers.serve_http(upstream_servers.build_server()) as url:
        path = folder / "upstreams.yaml"
        entries = [
            {"name": "local", "command": sys.executable, "args": [str(SERVER_SCRIPT)]},
            {"name": "remote", "prefix": "far", "url": url, "timeout_s": 5},
        ]
        path.write_text(yaml.safe_dump({"upstreams": entries}))
        yield path


@pytest.mark.parametrize("mode", ERAS)
async def test_upstream_tools_are_listed_beside_sophias_and_called_through_the_gateway(
    settings, api_keys, upstreams_file, mode
):
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams_file})
    async with serving(own) as url, connected(url, api_keys["read"], mode) as agent:
        names = {tool.name for tool in (await agent.list_tools()).tools}
        assert {"get_record", "local__echo", "far__echo", "local__add", "far__add"} <= names
        echoed = await agent.call_tool("local__echo", {"text": "through stdio"})
        added = await agent.call_tool("far__add", {"a": 2, "b": 3})
        failed = await agent.call_tool("far__fail", {})
    assert "through stdio" in text(echoed)
    assert added.structured_content == {"result": 5}
    assert failed.is_error  # the upstream's own error, passed on as a result


class Alternating(httpx2.AsyncBaseTransport):
    """A load balancer in miniature: each request to the next gateway in turn."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.sent = 0
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=self.ports[self.sent % len(self.ports)])
        self.sent += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("mode", ERAS)
async def test_two_gateways_serve_one_client_in_turn_without_a_session_error(settings, api_keys, mode):
    async with serving(settings) as first, serving(settings) as second:
        ports = [int(first.rsplit(":", 1)[1].split("/")[0]), int(second.rsplit(":", 1)[1].split("/")[0])]
        balancer = Alternating(ports)
        http = httpx2.AsyncClient(
            transport=balancer, headers={"Authorization": f"Bearer {api_keys['read']}"}, timeout=30
        )
        async with http, Client(streamable_http_client(first, http_client=http), mode=mode) as agent:
            for _ in range(3):
                assert any(tool.name == "pipeline" for tool in (await agent.list_tools()).tools)
                answered = await agent.call_tool("pipeline", {})
                assert not answered.is_error, answered.content
    assert balancer.sent >= 6  # both gateways answered in turn


async def test_an_admin_adds_disables_and_removes_an_upstream_over_http(settings, api_keys, tmp_path):
    path = tmp_path / "upstreams.yaml"
    path.write_text("upstreams: []\n")
    own = settings.model_copy(update={"mcp_upstreams_file": path})
    with upstream_servers.serve_http(upstream_servers.build_server()) as upstream_url:
        async with serving(own) as url:
            base = url.removesuffix("/mcp")
            admin = {"Authorization": f"Bearer {api_keys['admin']}"}
            async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as http:
                refused = await http.get(
                    "/admin/upstreams", headers={"Authorization": f"Bearer {api_keys['read']}"}
                )
                bad = await http.post("/admin/upstreams", json={"name": "x", "url": "ftp://nowhere"})
                added = await http.post(
                    "/admin/upstreams",
                    json={"name": "far", "url": upstream_url, "headers": {"X-Token": "s3cret"}},
                )
                twice = await http.post("/admin/upstreams", json={"name": "far", "url": upstream_url})
                async with connected(url, api_keys["read"], "2026-07-28") as agent:
                    assert "far__echo" in {tool.name for tool in (await agent.list_tools()).tools}
                    listed = (await http.get("/admin/upstreams")).json()
                    disabled = await http.post("/admin/upstreams/far:disable")
                    assert "far__echo" not in {tool.name for tool in (await agent.list_tools()).tools}
                removed = await http.delete("/admin/upstreams/far")
                missing = await http.delete("/admin/upstreams/far")
    assert refused.status_code == 403
    assert bad.status_code == 422
    assert "field `url`" in bad.json()["detail"]
    assert added.status_code == 201, added.text
    assert twice.status_code == 409
    [entry] = listed["upstreams"]
    assert entry["name"] == "far"
    assert "headers" not in entry  # secrets stay in the file
    assert disabled.json() == {"name": "far", "enabled": False}
    assert removed.status_code == 200
    assert missing.status_code == 404
    assert yaml.safe_load(path.read_text()) == {"upstreams": []}


async def test_an_upstream_dying_mid_call_is_a_clean_tool_error_and_the_next_call_works(
    settings, api_keys, upstreams_file
):
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams_file})
    async with serving(own) as url, connected(url, api_keys["read"], "2026-07-28") as agent:
        crashed = await agent.call_tool("local__crash", {})
        again = await agent.call_tool("local__echo", {"text": "back"})
    assert crashed.is_error
    assert "unavailable" in text(crashed)
    assert not again.is_error
    assert "back" in text(again)


@pytest.mark.parametrize("mode", ERAS)
async def test_an_upstreams_progress_reaches_the_client_under_its_own_token(
    settings, api_keys, upstreams_file, mode
):
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams_file})
    heard: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        heard.append((done, total, message))

    async with serving(own) as url, connected(url, api_keys["read"], mode) as agent:
        for tool in ("local__count", "far__count"):  # a stdio upstream and an HTTP one
            heard.clear()
            counted = await agent.call_tool(tool, {"steps": 3}, progress_callback=progress)
            assert counted.structured_content == {"result": 3}
            assert heard == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
        plain = await agent.call_tool("far__count", {"steps": 2})  # no token asked: a JSON answer
        assert plain.structured_content == {"result": 2}


@asynccontextmanager
async def agent_and_listener(settings, api_keys, upstreams: Path) -> AsyncIterator[tuple[Client, Any]]:
    """A gateway on `upstreams`, an agent (2026-07-28) and another client's tool-list changes."""
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams})
    async with (
        serving(own) as url,
        connected(url, api_keys["admin"], "2026-07-28") as listener,
        connected(url, api_keys["admin"], "2026-07-28") as agent,
        listener.listen(tools_list_changed=True) as changes,
    ):
        yield agent, changes


async def test_a_change_our_first_call_causes_is_heard_though_the_upstream_acks_listen_late(
    settings, api_keys, tmp_path
):
    """The gateway takes no request on a new session before the upstream acknowledged its listen
    stream: else a change caused by the first call went out while nobody listened."""
    server = upstream_servers.build_server(listen_delay_s=1.0)
    with upstream_servers.serve_http(server) as upstream_url:
        path = tmp_path / "upstreams.yaml"
        path.write_text(yaml.safe_dump({"upstreams": [{"name": "late", "url": upstream_url}]}))
        async with agent_and_listener(settings, api_keys, path) as (agent, changes):
            await agent.call_tool("late__grow", {"name": "sprout"})
            with anyio.fail_after(5):
                await anext(aiter(changes))
            assert "late__sprout" in {tool.name for tool in (await agent.list_tools()).tools}


async def test_clients_listening_hear_when_an_upstream_or_the_file_changes_the_tools(
    settings, api_keys, tmp_path
):
    with upstream_servers.serve_http(upstream_servers.build_server()) as upstream_url:
        path = tmp_path / "upstreams.yaml"
        entries = [{"name": "growing", "url": upstream_url, "timeout_s": 5}]
        path.write_text(yaml.safe_dump({"upstreams": entries}))
        async with agent_and_listener(settings, api_keys, path) as (agent, changes):
            await agent.call_tool("growing__grow", {"name": "sprout"})  # the upstream says it changed
            with anyio.fail_after(10):
                await anext(aiter(changes))
            assert "growing__sprout" in {tool.name for tool in (await agent.list_tools()).tools}

            entries.append({"name": "second", "url": upstream_url, "timeout_s": 5})
            path.write_text(yaml.safe_dump({"upstreams": entries}))  # the file gains an upstream
            with anyio.fail_after(10):
                await anext(aiter(changes))
            assert "second__echo" in {tool.name for tool in (await agent.list_tools()).tools}


META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "parity", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def posted(tool: str, arguments: Any, *, request_id: Any = 7, meta: Any = META, **headers: str) -> tuple:
    """A 2026-07-28 `tools/call` POST: (headers, body), the headers as the SDK's client sends them
    unless `headers` overrides them (an empty value drops one)."""
    sent = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "MCP-Method": "tools/call",
        "MCP-Name": tool,
    }
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    params = {"name": tool, "arguments": arguments, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    return {name: value for name, value in sent.items() if value}, body


async def test_lean_calls_answer_exactly_what_the_sdks_server_answers(settings, api_keys, upstreams_file):
    from metrics import sample

    lean_cases = [
        posted("far__echo", {"text": "héllo \u2028"}),
        posted("far__echo", {"text": "long " * 100_000}),  # half a megabyte each way
        posted("far__add", {"a": 2, "b": 3}, request_id="an id"),
        posted("far__add", {"a": 2**70, "b": 1}),  # past 64 bits: exact both ways
        posted("far__add", {"a": "two", "b": 3}),  # the upstream's validation: a tool error
        posted("far__fail", {}),
        posted("local__echo", {"text": "stdio"}),
        posted("get_record", {"id": "00000000-0000-0000-0000-000000000000"}),  # Sophia's: not there
        posted("get_record", {"id": "not a uuid"}),
        posted("far__echo", {"text": "x"}, MCP_Param_Text="other"),  # a header no schema declares
    ]
    sdk_cases = [
        posted("nobody__has_this", {}),  # unknown: invalid params
        posted("far__echo", {"text": "x"}, MCP_Name="far__add"),  # headers disagree with the body
        posted("far__echo", {"text": "x"}, meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
        posted("far__echo", {"text": "x"}, meta={**META, "progressToken": "p1"}),  # streamed
        posted("far__echo", {"text": "x", "progressToken": 1}),  # picked for streaming all the same
        posted("far__echo", {"text": "x"}, Accept="text/event-stream"),  # JSON not accepted
        posted("far__echo", "not an object"),
        posted("far__echo", {"text": "x"}, request_id=True),
        posted("far__echo", {"text": "x"}, MCP_Protocol_Version="2099-01-01"),
        posted("far__echo", {"text": "x"}, Host="evil.example"),  # DNS rebinding: refused
        posted("far__echo", {"text": "x"}, meta={**META, "io.modelcontextprotocol/clientInfo": 5}),
        posted("far__echo", {"text": "x" * (1 << 20)}),  # over what the lean path reads: the SDK's
        (posted("far__echo", {})[0], b'{"jsonrpc": "2.0", "id": 1, not json'),
        (posted("far__echo", {})[0], b"[" + json_bytes(posted("far__echo", {"text": "x"})[1]) + b"]"),
    ]
    lean = settings.model_copy(update={"mcp_upstreams_file": upstreams_file})
    plain = lean.model_copy(update={"mcp_lean_calls": False})
    auth = {"Authorization": f"Bearer {api_keys['read']}"}
    answers: dict[bool, list[tuple[int, str]]] = {}
    taken: dict[bool, list[float]] = {}
    for gateway in (lean, plain):
        got, counted = [], []
        async with serving(gateway) as url, httpx.AsyncClient(timeout=30) as http:
            for headers, body in [*lean_cases, *sdk_cases]:
                before = sample("sophia_mcp_lean_calls_total")
                sent = body if isinstance(body, bytes) else json_bytes(body)
                answer = await http.post(url, content=sent, headers={**headers, **auth})
                got.append((answer.status_code, answer.text))
                counted.append(sample("sophia_mcp_lean_calls_total") - before)
        answers[gateway.mcp_lean_calls], taken[gateway.mcp_lean_calls] = got, counted

    assert taken[True] == [1] * len(lean_cases) + [0] * len(sdk_cases)  # each took the path it should
    assert taken[False] == [0] * (len(lean_cases) + len(sdk_cases))
    for (_headers, body), fast, slow in zip(
        [*lean_cases, *sdk_cases], answers[True], answers[False], strict=True
    ):
        assert fast[0] == slow[0], body
        assert _comparable(fast[1]) == _comparable(slow[1]), body


def json_bytes(value: Any) -> bytes:
    """JSON as the SDK's client writes it (the standard library: integers of any size)."""
    import json

    return json.dumps(value).encode()


def _comparable(text: str) -> Any:
    """An answer as JSON (an SSE answer as its events' data; text that is not JSON as it is)."""
    import json

    if text.startswith(("event:", ":")):
        return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    try:
        return json.loads(text)
    except ValueError:
        return text  # an HTTP-level refusal (a bad Host): its words
