"""Defects a review of the gateway found, each held by a test against the real thing: the gateway
served over HTTP, PostgreSQL, and real MCP servers (the SDK's low-level `Server` where a test needs
an upstream that misbehaves in one precise way). The tests starting MCP servers of their own are
in the e2e tier, as the project's other upstream tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import upstream_servers
import yaml
from gateway_clients import ERAS, connected, serving
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from metrics import sample
from upstream_helpers import ADMIN, READER, configured, text
from waiting import eventually

from sophia.mcp_gateway import audit as audit_module
from sophia.mcp_gateway import router as router_module
from sophia.mcp_gateway import server as server_module
from sophia.mcp_gateway.admin import shown_args
from sophia.mcp_gateway.audit import AuditTrail
from sophia.mcp_gateway.providers import Caller
from sophia.mcp_gateway.router import Router, UnknownTool
from sophia.mcp_gateway.upstreams import Upstream


class Served:
    """A low-level `Server`, in the shape `upstream_servers.serve_http` serves."""

    def __init__(self, server: Server[Any]) -> None:
        self.server = server

    def streamable_http_app(self) -> Any:
        return self.server.streamable_http_app()


def resources_only() -> Server[Any]:
    """An MCP server with resources and no tools (legitimate: it has no `tools` capability), so
    it answers `tools/list` with "Method not found"."""

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])

    return Server("resources-only", on_list_resources=list_resources)


@asynccontextmanager
async def closing(*upstreams: Upstream) -> AsyncIterator[None]:
    """The upstreams closed on the way out, while their servers still run."""
    try:
        yield
    finally:
        for upstream in upstreams:
            await upstream.close()


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_an_upstream_without_tools_leaves_the_other_tools_listed_and_callable(
    protocol: str,
) -> None:
    with (
        upstream_servers.serve_http(upstream_servers.build_server()) as good_url,
        upstream_servers.serve_http(Served(resources_only())) as toolless_url,
    ):
        good = Upstream(configured("good", url=good_url))
        toolless = Upstream(configured("toolless", url=toolless_url, protocol=protocol))
        async with closing(good, toolless):
            router = Router(lambda: [good, toolless], None, 10)
            names = [tool.name for tool in await router.list_tools(READER)]
            echoed = await router.call_tool("good__echo", {"text": "still here"}, READER)
            with pytest.raises(UnknownTool):
                await router.call_tool("toolless__anything", {}, READER)
    assert "good__echo" in names
    assert not any(name.startswith("toolless__") for name in names)
    assert not echoed.is_error
    assert text(echoed) == "still here"


@pytest.mark.e2e
async def test_an_upstream_result_breaking_its_output_schema_is_a_tool_error_naming_it() -> None:
    with upstream_servers.serve_http(Served(upstream_servers.breaking_its_output_schema())) as url:
        # 2025-11-25: the call goes through the SDK's client, which checks the output schema
        upstream = Upstream(configured("liar", url=url, protocol="2025-11-25"))
        async with closing(upstream):
            result = await Router(lambda: [upstream], None, 10).call_tool("liar__count", {}, ADMIN)
    assert result.is_error
    assert "liar__count" in text(result)
    assert "output schema" in text(result) or "structured content" in text(result)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_data_filter_with_an_integer_past_64_bits_is_answered_not_an_internal_error(
    settings, api_keys, mode
):
    huge = 2**70
    async with serving(settings) as url, connected(url, api_keys["read"], mode) as agent:
        listed = await agent.call_tool("search_records", {"data": {"amount": huge}, "limit": 1})
        searched = await agent.call_tool(
            "semantic_search", {"query": "renewal", "filters": {"data": {"amount": huge}}}
        )
    assert not listed.is_error, listed.content
    assert listed.structured_content["items"] == []
    assert not searched.is_error, searched.content


async def audited_arguments(database, probe: str) -> list[list[str]]:
    async with database.connection() as connection:
        rows = await connection.fetch(
            """SELECT payload FROM sophia_core.outbox
               WHERE event_type = 'audit.entry' AND payload->'details'->'arguments' ? $1""",
            probe,
        )
    return [row["payload"]["details"]["arguments"] for row in rows]


async def test_an_argument_named_with_a_nul_does_not_stop_the_audit_trail(
    settings, api_keys, database, monkeypatch
):
    monkeypatch.setattr(audit_module, "FLUSH_S", 0.02)  # the entries written at once, not in 0.2 s
    probe = f"probe_{uuid.uuid4().hex}"
    async with serving(settings) as url, connected(url, api_keys["read"], "2026-07-28") as agent:
        refused = await agent.call_tool("search_records", {"a\x00b": 1})
        later = await agent.call_tool("search_records", {probe: 1})
        entries: list[list[str]] = []

        async def flushed() -> bool:
            entries[:] = await audited_arguments(database, probe)
            return bool(entries)

        await eventually(flushed, timeout_s=5)
    assert refused.is_error
    assert later.is_error  # an unknown argument: a tool error, audited all the same
    assert entries == [[probe]]


async def test_one_audit_entry_postgres_refuses_costs_no_other_entry_of_its_batch(database):
    """A tool's name is the upstream's text: one with a NUL (which jsonb refuses) in a batch of
    others is dropped alone, and counted; the others of its batch are written."""
    probe = f"probe_{uuid.uuid4().hex}"
    trail = AuditTrail(database)
    caller = Caller("key-id", "sk_probe", "read")
    for tool in ("first", "bad\x00tool", "last"):
        trail.record(caller, tool, [probe], "ok", 0.001)
    dropped = sample("sophia_mcp_audit_dropped_total") or 0.0
    assert await trail.flush() == 2
    assert await audited_arguments(database, probe) == [[probe], [probe]]
    assert sample("sophia_mcp_audit_dropped_total") == dropped + 1


async def test_the_admin_api_answers_an_unusable_upstreams_file_with_a_4xx_naming_it(
    settings, api_keys, tmp_path
):
    upstreams = tmp_path / "upstreams.yaml"
    upstreams.write_text("upstreams: []\n")
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams})
    entry = {"name": "extra", "url": "http://127.0.0.1:9/mcp"}
    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with serving(own) as url, httpx.AsyncClient(timeout=10, headers=headers) as http:
        admin = url.removesuffix("/mcp") + "/admin/upstreams"
        answers = []
        for broken in ("upstreams: [\n  - {name: a\n", "upstreams:\n", "upstreams: 5\n"):
            upstreams.write_text(broken)  # edited by hand, badly: the watcher keeps the last good one
            answers += [await http.get(admin), await http.post(admin, json=entry)]
            answers.append(await http.post(admin + "/extra:disable"))
        upstreams.unlink()
        answers.append(await http.get(admin))
    for answer in answers:
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert str(upstreams) in answer.json()["detail"]


async def test_a_tool_a_new_view_takes_away_is_not_callable_once_the_view_applies(
    settings, api_keys, tmp_path, monkeypatch
):
    monkeypatch.setattr(router_module, "INDEX_TTL_S", 60.0)  # however slow the machine: within it
    monkeypatch.setattr(server_module, "UPSTREAMS_POLL_S", 0.02)  # the new file is read at once, not in 1 s
    views = tmp_path / "upstreams.yaml"
    views.write_text(
        "upstreams: []\nviews:\n  - scopes: [read]\n    tools: [pipeline, get_record]\n"
        "  - scopes: [admin]\n    tools: [pipeline, get_record]\n"
    )
    own = settings.model_copy(update={"mcp_upstreams_file": views})
    async with (
        serving(own) as url,
        connected(url, api_keys["read"], "2026-07-28") as reader,
        connected(url, api_keys["admin"], "2026-07-28") as admin,
    ):
        allowed = await reader.call_tool("pipeline", {})
        views.write_text(
            "upstreams: []\nviews:\n  - scopes: [read]\n    tools: [get_record]\n"
            "  - scopes: [admin]\n    tools: [get_record]\n"
        )

        async def applied() -> bool:
            return "pipeline" not in {tool.name for tool in (await admin.list_tools()).tools}

        await eventually(applied, timeout_s=10, poll_s=0.02)
        with pytest.raises(MCPError, match="pipeline"):
            await reader.call_tool("pipeline", {})
    assert not allowed.is_error, allowed.content


def hanging_on_delete(app: Any) -> Any:
    """`app`, except that a DELETE (a 2025-11-25 client ending its session) is taken and never
    answered, as a wedged server would."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE":
            await anyio.sleep_forever()
        await app(scope, receive, send)

    return asgi


@pytest.mark.e2e
async def test_an_upstream_that_never_answers_the_session_delete_does_not_hold_the_close() -> None:
    with upstream_servers.serve_http(upstream_servers.build_server(), wrap=hanging_on_delete) as url:
        upstream = Upstream(configured("mute", url=url, protocol="2025-11-25", timeout_s=1))
        listed = await upstream.list_tools(READER)  # the session is open (it has an id to end)
        started = time.monotonic()
        async with asyncio.timeout(15):  # unbounded, it waited for the HTTP client's 300 s read
            await upstream.close()
        took = time.monotonic() - started
    assert "mute__echo" in {tool.name for tool in listed}
    assert took < 5, took


async def test_the_admin_api_shows_no_credential_of_an_upstream_url_or_command_line(
    settings, api_keys, tmp_path
):
    upstreams = tmp_path / "upstreams.yaml"
    upstreams.write_text(
        yaml.safe_dump(
            {
                "upstreams": [
                    {
                        "name": "remote",
                        "url": "https://robot:pw-in-url@mcp.invalid:8443/mcp?token=qs-secret&v=2",
                    },
                    {"name": "bare", "url": "https://user-token-secret@mcp.invalid/mcp"},
                    {
                        "name": "local",
                        "command": "npx",
                        "args": [
                            "-y",
                            "some-mcp-server",
                            "--api-key",
                            "flag-secret-1",
                            "--access-token=flag-secret-2",
                            "GITHUB_TOKEN=assign-secret",
                            "--header",
                            "Authorization: Bearer header-secret",
                            "https://u:url-arg-secret@host.invalid/",
                            "--env-var",
                            "${SOME_TOKEN}",
                            "--verbose",
                            "/srv/shared",
                        ],
                    },
                ]
            }
        )
    )
    own = settings.model_copy(update={"mcp_upstreams_file": upstreams})
    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with serving(own) as url, httpx.AsyncClient(timeout=10, headers=headers) as http:
        listed = await http.get(url.removesuffix("/mcp") + "/admin/upstreams")
    assert listed.status_code == 200, listed.text
    assert "secret" not in listed.text
    assert "pw-in-url" not in listed.text
    remote, bare, local = listed.json()["upstreams"]
    assert remote["url"] == "https://robot:***@mcp.invalid:8443/mcp?token=***&v=***"
    assert bare["url"] == "https://***@mcp.invalid/mcp"
    assert local["args"] == [
        "-y",
        "some-mcp-server",
        "--api-key",
        "***",
        "--access-token=***",
        "GITHUB_TOKEN=***",
        "--header",
        "Authorization: ***",
        "https://u:***@host.invalid/",
        "--env-var",
        "${SOME_TOKEN}",
        "--verbose",
        "/srv/shared",
    ]
    assert "secret" in upstreams.read_text()  # the file itself is untouched


async def test_one_key_cannot_take_every_listen_slot_of_a_process(settings, api_keys):
    own = settings.model_copy(update={"mcp_listen_per_key": 2})
    async with (
        serving(own) as url,
        connected(url, api_keys["read"], "2026-07-28") as greedy,
        connected(url, api_keys["admin"], "2026-07-28") as other,
    ):
        async with AsyncExitStack() as held:
            for _ in range(2):
                await held.enter_async_context(greedy.listen(tools_list_changed=True))
            with pytest.raises(MCPError, match="SOPHIA_MCP_LISTEN_PER_KEY") as refused:
                async with greedy.listen(tools_list_changed=True):
                    pass
            async with other.listen(tools_list_changed=True):
                pass  # another key still listens
        listens_again: list[bool] = []

        async def freed() -> bool:  # the streams it closed are given back as the server sees them end
            try:
                async with greedy.listen(tools_list_changed=True), greedy.listen(tools_list_changed=True):
                    listens_again.append(True)
            except MCPError:
                return False
            return True

        await eventually(freed, timeout_s=10, poll_s=0.02)
    assert "2" in refused.value.error.message
    assert listens_again


async def test_an_unknown_tool_of_any_length_is_named_in_an_error_of_bounded_size(settings, api_keys):
    name = "no_such_tool_" + "x" * 100_000
    async with serving(settings) as url, connected(url, api_keys["read"], "legacy") as agent:
        with pytest.raises(MCPError) as unknown:
            await agent.call_tool(name, {})
    message = unknown.value.error.message
    assert len(message) < 1_000, len(message)
    assert name[:100] in message  # still says which
    assert "…" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--header=Authorization: Bearer sk-live-1"], ["--header=Authorization: ***"]),
        (["https://TOKEN:@host/x"], ["https://***@host/x"]),
        (["--accessToken", "ghp_1"], ["--accessToken", "***"]),
        (["--clientSecret", "c"], ["--clientSecret", "***"]),
        (["--authToken=t"], ["--authToken=***"]),
        (["--port", "8080", "server.js"], ["--port", "8080", "server.js"]),
    ],
)
def test_credentials_in_the_other_common_shapes_of_a_command_line_are_masked(args, expected):
    assert shown_args(args) == expected
