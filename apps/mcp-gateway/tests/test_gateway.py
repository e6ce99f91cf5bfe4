"""The gateway over real HTTP, driven by the official SDK's `Client` in both protocol eras: Sophia's
tools listed and called with a key, keys and JWTs refused or admitted, a rate per caller, Host
checks, and an audit entry for every call."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import orjson
import pytest
from gateway_clients import ERAS, connected, serving
from mcp.shared.exceptions import MCPError
from waiting import eventually

from sophia.database import keys
from sophia.mcp_gateway import audit

JWT_SECRET = "a-test-secret-of-thirty-two-bytes-or-more"


@pytest.fixture(scope="module")
async def gateway(settings, tmp_path_factory) -> AsyncIterator[str]:
    key_file = tmp_path_factory.mktemp("jwt") / "secret"
    key_file.write_text(JWT_SECRET)
    own = settings.model_copy(
        update={"mcp_jwt_issuer": "https://issuer.test", "mcp_jwt_key_file": key_file, "mcp_rate_per_s": 50.0}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit, "FLUSH_S", 0.02)  # audit entries written at once, not up to 0.2 s later
        async with serving(own) as url:
            yield url


def token(scope: str, **claims: object) -> str:
    body = {
        "iss": "https://issuer.test",
        "sub": "agent-7",
        "exp": int(time.time()) + 60,
        "scope": scope,
        **claims,
    }
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


async def written_record(client: httpx.AsyncClient, kind: str, data: dict[str, object]) -> str:
    """A record written through the API under a source system of its own; its id."""
    source = f"mcp{uuid.uuid4().hex[:8]}"
    written = await client.put(f"/api/v1/records/{source}/{kind}/{kind[0]}-1", json={"data": data})
    return str(written.json()["id"])


@pytest.mark.parametrize("mode", ERAS)
async def test_an_agent_lists_and_calls_sophias_tools_in_either_era(gateway, client, api_keys, mode):
    record_id = await written_record(client, "deal", {"dealname": "Acme"})
    async with connected(gateway, api_keys["read"], mode) as agent:
        listed = await agent.list_tools()
        names = {tool.name for tool in listed.tools}
        assert {"get_record", "search_records", "semantic_search", "active_deals", "pipeline"} <= names
        assert all(tool.annotations and tool.annotations.read_only_hint for tool in listed.tools)
        result = await agent.call_tool("get_record", {"id": record_id})
    assert not result.is_error, result.content
    assert result.structured_content["record"]["data"]["dealname"] == "Acme"


@pytest.mark.parametrize("mode", ERAS)
async def test_an_unknown_tool_is_a_protocol_error_naming_it(gateway, api_keys, mode):
    async with connected(gateway, api_keys["read"], mode) as agent:
        with pytest.raises(MCPError, match="no_such_tool"):
            await agent.call_tool("no_such_tool", {})


async def post(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            url, json=body, headers={"accept": "application/json, text/event-stream", **headers}
        )


async def test_no_key_a_wrong_key_or_a_bad_token_is_a_401_saying_so(gateway):
    missing = await post(gateway, {})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in missing.json()["detail"]
    wrong = await post(gateway, {"Authorization": "Bearer sk_00000000_" + "A" * 43})
    assert wrong.status_code == 401
    claims = {"iss": "https://issuer.test", "sub": "x", "exp": int(time.time()) + 60, "scope": "sophia:read"}
    forged = jwt.encode(claims, "another-secret-of-thirty-two-bytes-or-more")
    refused = await post(gateway, {"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert "not valid" in refused.json()["detail"]
    expired = token("sophia:read", exp=int(time.time()) - 10)
    assert (await post(gateway, {"Authorization": f"Bearer {expired}"})).status_code == 401
    scopeless = token("openid profile")
    assert "grants none" in (await post(gateway, {"Authorization": f"Bearer {scopeless}"})).json()["detail"]


@pytest.mark.parametrize("mode", ERAS)
async def test_a_jwt_with_a_sophia_scope_is_admitted(gateway, mode):
    async with connected(gateway, token("openid sophia:read"), mode) as agent:
        listed = await agent.list_tools()
    assert any(tool.name == "get_record" for tool in listed.tools)


async def test_a_caller_over_its_rate_is_answered_429_with_retry_after(settings, database):
    async with database.connection() as connection:
        _, secret = await keys.create(connection, "mcp-rate", "read")
    headers = {"Authorization": f"Bearer {secret}", "accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    slow = settings.model_copy(update={"mcp_rate_per_s": 1.0})  # bursts of 2: a slow machine still overruns
    async with serving(slow) as url, httpx.AsyncClient(timeout=10) as http:
        answers = [await http.post(url, json=body, headers=headers) for _ in range(6)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert "requests a second" in limited.json()["detail"]


async def test_a_request_for_another_host_or_from_another_origin_is_refused(gateway, api_keys):
    authorized = {"Authorization": f"Bearer {api_keys['read']}"}
    rebound = await post(gateway, {**authorized, "Host": "evil.example"})
    assert rebound.status_code == 421
    assert "Host" in rebound.text
    foreign = await post(gateway, {**authorized, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "Origin" in foreign.text


async def test_every_call_leaves_an_audit_entry_without_argument_values(gateway, database):
    marker = f"secret-{uuid.uuid4().hex}"
    async with database.connection() as connection:  # a key of its own: other tests' calls are not its
        key, secret = await keys.create(connection, "mcp-audit", "read")
    async with connected(gateway, secret, "2026-07-28") as agent:
        await agent.call_tool("search_records", {"source_system": "nothing", "limit": 1})
        await agent.call_tool("semantic_search", {"query": marker})

    async def audited() -> list[dict]:
        async with database.connection() as connection:
            rows = await connection.fetch(
                """SELECT payload FROM sophia_core.outbox
                   WHERE event_type = 'audit.entry' AND key = 'mcp/tool/semantic_search'
                     AND payload->>'actor' = $1""",
                key.actor,
            )
        return [row["payload"] for row in rows]

    entries: list[dict] = []

    async def flushed() -> bool:  # every FLUSH_S
        entries[:] = await audited()
        return bool(entries)

    await eventually(flushed, timeout_s=5)
    entry = entries[-1]
    assert entry["actor"] == key.actor
    assert entry["details"]["tool"] == "semantic_search"
    assert entry["details"]["arguments"] == ["query"]
    assert marker not in str(entries)


async def test_malformed_oversize_or_deeply_nested_input_is_refused_not_a_500(gateway, api_keys):
    headers = {
        "Authorization": f"Bearer {api_keys['read']}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2025-11-25",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        garbled = await http.post(gateway, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=headers)
        huge = await http.post(
            gateway, content=b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}', headers=headers
        )
        surrogate = await http.post(
            gateway, content=b'{"jsonrpc": "2.0", "id": 1, "method": "\\ud800"}', headers=headers
        )
    assert 400 <= garbled.status_code < 500
    assert huge.status_code == 413
    assert surrogate.status_code < 500
    nested: dict = {}
    inner = nested
    for _ in range(200):
        inner["a"] = {}
        inner = inner["a"]
    async with connected(gateway, api_keys["read"], "2026-07-28") as agent:
        result = await agent.call_tool("search_records", {"data": nested})
    assert result.is_error


async def test_past_the_list_limit_find_tools_finds_the_rest_and_they_stay_callable(settings, api_keys):
    own = settings.model_copy(update={"mcp_list_max_tools": 3})
    async with serving(own) as url, connected(url, api_keys["read"], "2026-07-28") as agent:
        listed = [tool.name for tool in (await agent.list_tools()).tools]
        found = await agent.call_tool(
            "find_tools", {"query": "weekly sentiment of calls and messages", "limit": 3}
        )
        unlisted = await agent.call_tool("sentiment_trend", {})
        refused = await agent.call_tool("find_tools", {"query": "", "limit": 500})
    assert len(listed) == 3
    assert listed[0] == "find_tools"
    assert "sentiment_trend" not in listed
    assert found.structured_content["mode"] == "words"
    assert found.structured_content["tools"][0]["name"] == "sentiment_trend"
    assert "input_schema" in found.structured_content["tools"][0]
    assert not unlisted.is_error, unlisted.content
    assert refused.is_error


async def test_a_view_limits_what_the_keys_and_scopes_it_names_see_and_call(settings, api_keys, tmp_path):
    views = tmp_path / "upstreams.yaml"
    views.write_text("upstreams: []\nviews:\n  - scopes: [read]\n    tools: [get_record, 'find_*']\n")
    own = settings.model_copy(update={"mcp_upstreams_file": views})
    async with serving(own) as url:
        async with connected(url, api_keys["read"], "2026-07-28") as reader:
            seen = {tool.name for tool in (await reader.list_tools()).tools}
            with pytest.raises(MCPError, match="pipeline"):
                await reader.call_tool("pipeline", {})
            found = await reader.call_tool("find_tools", {"query": "pipeline by stage"})
        async with connected(url, api_keys["admin"], "2026-07-28") as admin:
            everything = {tool.name for tool in (await admin.list_tools()).tools}
    assert seen == {"get_record", "find_tools"}
    assert "pipeline" not in [tool["name"] for tool in found.structured_content["tools"]]  # not for this key
    assert "pipeline" in everything


@pytest.mark.parametrize("mode", ERAS)
async def test_a_record_is_a_resource_by_its_uri(gateway, client, api_keys, mode):
    record_id = await written_record(client, "message", {"text": "hello"})
    async with connected(gateway, api_keys["read"], mode) as agent:
        templates = await agent.list_resource_templates()
        read = await agent.read_resource(f"sophia://records/{record_id}")
        with pytest.raises(MCPError, match="No record with id"):
            await agent.read_resource(f"sophia://records/{uuid.uuid4()}")
        with pytest.raises(MCPError, match="Unknown resource"):
            await agent.read_resource("file:///etc/passwd")
    assert [template.uri_template for template in templates.resource_templates] == ["sophia://records/{id}"]
    [contents] = read.contents
    assert contents.mime_type == "application/json"
    assert orjson.loads(contents.text)["record"]["data"] == {"text": "hello"}
