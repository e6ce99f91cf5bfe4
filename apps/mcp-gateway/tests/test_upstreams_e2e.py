"""Upstream MCP servers as providers, against real servers: a stdio command (this directory's
`upstream_servers.py`, run with this interpreter) and the same server over Streamable HTTP. The
e2e tier: each test starts processes of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import upstream_servers
import yaml
from mcp import Client
from metrics import sample
from upstream_helpers import (
    ADMIN,
    READER,
    WRITER,
    alive,
    configured,
    group_gone,
    stdio,
    text,
)
from waiting import eventually

from sophia.engines.process import free_port
from sophia.mcp_gateway.config import (
    ConfigWatcher,
    load,
    parse,
)
from sophia.mcp_gateway.providers import ToolUnavailable
from sophia.mcp_gateway.upstreams import Upstream, Upstreams

pytestmark = pytest.mark.e2e  # each test starts MCP servers of its own (processes, or uvicorn)


async def lists(upstream: Upstream, name: str) -> bool:
    return name in [tool.name for tool in await upstream.list_tools(ADMIN)]


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with upstream_servers.serve_http(upstream_servers.build_server()) as url:
        yield url


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[Upstream]:
    upstream = Upstream(stdio("local"))
    yield upstream
    await upstream.close()


@pytest.fixture
async def closing() -> AsyncIterator[list[Upstream]]:
    """Upstreams a test makes, closed after it."""
    made: list[Upstream] = []
    yield made
    await asyncio.gather(*(upstream.close() for upstream in made))


async def test_tools_are_listed_under_the_prefix_with_schemas_and_annotations_untouched(
    local: Upstream, http_url: str, closing: list[Upstream]
) -> None:
    remote = Upstream(configured("remote", prefix="web", url=http_url))
    closing.append(remote)
    async with Client(upstream_servers.build_server()) as direct:
        expected = (await direct.list_tools()).tools

    for upstream, prefix in ((local, "local"), (remote, "web")):
        listed = await upstream.list_tools(ADMIN)
        assert [tool.name for tool in listed] == [f"{prefix}__{tool.name}" for tool in expected]
        for tool, original in zip(listed, expected, strict=True):
            assert tool.input_schema == original.input_schema
            assert tool.output_schema == original.output_schema
            assert tool.annotations == original.annotations
            assert tool.description == original.description
    assert local.session is not None
    assert local.session.client is not None
    assert local.session.client.protocol_version == "2026-07-28"  # auto: the newest era both speak


async def test_a_call_goes_to_each_transport_and_a_tool_error_is_a_result(
    local: Upstream, http_url: str, closing: list[Upstream]
) -> None:
    remote = Upstream(configured("remote", url=http_url))
    closing.append(remote)
    before = sample("sophia_mcp_upstream_requests_total", upstream="local", tool="add", outcome="ok")

    for upstream in (local, remote):
        added = await upstream.call_tool(f"{upstream.name}__add", {"a": 2, "b": 3}, ADMIN)
        assert not added.is_error
        assert added.structured_content == {"result": 5}
        failed = await upstream.call_tool(f"{upstream.name}__fail", {}, ADMIN)
        assert failed.is_error
        assert "fail always fails" in text(failed)

    assert (
        sample("sophia_mcp_upstream_requests_total", upstream="local", tool="add", outcome="ok") == before + 1
    )
    assert sample("sophia_mcp_upstream_processes") >= 1


async def test_the_2025_era_can_be_forced(http_url: str, closing: list[Upstream]) -> None:
    legacy = Upstream(configured("legacy", url=http_url, protocol="2025-11-25"))
    closing.append(legacy)

    echoed = await legacy.call_tool("legacy__echo", {"text": "hello"}, ADMIN)

    assert text(echoed) == "hello"
    assert legacy.session is not None
    assert legacy.session.client is not None
    assert legacy.session.client.protocol_version == "2025-11-25"


async def test_timeouts_make_a_call_unavailable_and_repeated_ones_open_the_breaker(
    http_url: str, closing: list[Upstream]
) -> None:
    upstream = Upstream(
        configured(
            "sluggish",
            url=http_url,
            timeout_s=0.2,
            breaker={"min_calls": 4, "failure_rate": 0.75, "open_s": 60},
        )
    )
    closing.append(upstream)

    for _ in range(3):  # with the listing that went well before the first: 3 failures of 4 requests
        with pytest.raises(ToolUnavailable, match=r"no answer within 0\.2 s"):
            await upstream.call_tool("sluggish__slow", {"seconds": 2}, ADMIN)

    with pytest.raises(ToolUnavailable, match="breaker open"):
        await upstream.call_tool("sluggish__echo", {"text": "x"}, ADMIN)
    with pytest.raises(ToolUnavailable, match="breaker open"):
        await upstream.list_tools(ADMIN)
    assert sample("sophia_breaker_state", dependency="mcp_upstream:sluggish") == 2


async def test_tool_errors_never_open_the_breaker(http_url: str, closing: list[Upstream]) -> None:
    upstream = Upstream(configured("faulty", url=http_url, breaker={"min_calls": 2}))
    closing.append(upstream)

    results = [await upstream.call_tool("faulty__fail", {}, ADMIN) for _ in range(4)]

    assert all(result.is_error for result in results)
    assert upstream.breaker.state.name == "CLOSED"


async def test_a_crash_mid_call_is_unavailable_and_the_next_call_starts_the_command_again(
    closing: list[Upstream],
) -> None:
    upstream = Upstream(stdio("crashy"))
    closing.append(upstream)
    await upstream.list_tools(ADMIN)
    first_pid = upstream.pid
    assert first_pid is not None

    with pytest.raises(ToolUnavailable, match="process ended"):
        await upstream.call_tool("crashy__crash", {}, ADMIN)
    await eventually(lambda: group_gone(first_pid))
    echoed = await upstream.call_tool("crashy__echo", {"text": "back"}, ADMIN)

    assert text(echoed) == "back"
    assert upstream.pid not in (None, first_pid)


async def test_only_read_only_tools_are_tried_again_after_an_outage(
    tmp_path: Path, closing: list[Upstream]
) -> None:
    upstream = Upstream(stdio("retried"))
    closing.append(upstream)
    opened = "sophia_mcp_upstream_sessions_opened_total"
    before = sample(opened, upstream="retried")

    survived = await upstream.call_tool(
        "retried__crash_once_read_only", {"marker": str(tmp_path / "a")}, ADMIN
    )
    assert text(survived) == "survived"
    assert sample(opened, upstream="retried") == before + 2  # crashed on the first try, answered the second

    with pytest.raises(ToolUnavailable, match="process ended"):
        await upstream.call_tool("retried__crash_once", {"marker": str(tmp_path / "b")}, ADMIN)
    assert (tmp_path / "b").exists()  # it ran once and was not run again


async def test_an_idle_command_is_stopped_with_everything_it_started(closing: list[Upstream]) -> None:
    processes = "sophia_mcp_upstream_processes"
    before = sample(processes)
    upstream = Upstream(stdio("idler", idle_s=0.3, ping_s=0))
    closing.append(upstream)
    sleeper = await upstream.call_tool("idler__spawn_sleeper", {}, ADMIN)
    sleeper_pid = int(text(sleeper))
    leader_pid = upstream.pid
    assert leader_pid is not None
    assert alive(sleeper_pid)

    await eventually(lambda: upstream.pid is None and group_gone(leader_pid), timeout_s=5)

    assert not alive(leader_pid)
    assert not alive(sleeper_pid)
    await eventually(lambda: sample(processes) == before)


async def test_a_command_that_never_answers_its_handshake_is_unavailable_and_stopped(
    closing: list[Upstream],
) -> None:
    upstream = Upstream(configured("mute", command="sleep", args=["30"], timeout_s=0.3))
    closing.append(upstream)

    with pytest.raises(ToolUnavailable, match=r"no answer to the handshake within 0\.3 s"):
        await upstream.list_tools(ADMIN)

    session = upstream.session
    assert session is not None
    assert session.process is not None
    assert session.process.pid is not None
    pid = session.process.pid
    await eventually(lambda: group_gone(pid))


async def test_an_unreachable_http_upstream_is_unavailable(closing: list[Upstream]) -> None:
    upstream = Upstream(configured("nowhere", url=f"http://127.0.0.1:{free_port()}/mcp", timeout_s=2))
    closing.append(upstream)

    with pytest.raises(ToolUnavailable, match=r"nowhere: .*connect"):
        await upstream.list_tools(ADMIN)


async def test_a_server_gone_is_noticed_without_a_call_and_the_next_call_opens_a_new_session(
    closing: list[Upstream],
) -> None:
    port = free_port()
    with upstream_servers.serve_http(upstream_servers.build_server(), port) as url:
        upstream = Upstream(configured("flaky", url=url, ping_s=0.1, protocol="2025-11-25"))
        closing.append(upstream)
        await upstream.list_tools(ADMIN)
        first = upstream.session

    await eventually(lambda: first is not None and first.ended_because is not None, timeout_s=5)
    with pytest.raises(ToolUnavailable, match=r"flaky: .*connect"):
        await upstream.call_tool("flaky__echo", {"text": "anyone?"}, ADMIN)

    with upstream_servers.serve_http(upstream_servers.build_server(), port):
        echoed = await upstream.call_tool("flaky__echo", {"text": "back"}, ADMIN)
        assert text(echoed) == "back"
        assert upstream.session is not first
        await upstream.close()


async def test_a_call_refused_for_a_session_the_restarted_server_forgot_goes_to_a_new_session(
    closing: list[Upstream],
) -> None:
    port = free_port()
    with upstream_servers.serve_http(upstream_servers.build_server(), port) as url:
        upstream = Upstream(configured("restarted", url=url, ping_s=0, protocol="2025-11-25"))
        closing.append(upstream)
        await upstream.call_tool("restarted__add", {"a": 1, "b": 1}, ADMIN)
        first = upstream.session

    with upstream_servers.serve_http(upstream_servers.build_server(), port):
        added = await upstream.call_tool(
            "restarted__add", {"a": 1, "b": 2}, ADMIN
        )  # not read-only, yet sent again
        assert added.structured_content == {"result": 3}
        assert upstream.session is not first
        await upstream.close()


async def test_scope_and_allowed_tools_limit_what_a_caller_sees_and_calls(
    http_url: str, closing: list[Upstream]
) -> None:
    upstream = Upstream(configured("guarded", url=http_url, scope="write", allow_tools=["echo"]))
    closing.append(upstream)

    assert await upstream.list_tools(READER) == []
    assert [tool.name for tool in await upstream.list_tools(WRITER)] == ["guarded__echo"]
    assert (await upstream.call_tool("guarded__add", {"a": 1, "b": 1}, ADMIN)).is_error
    assert (await upstream.call_tool("guarded__echo", {"text": "x"}, READER)).is_error
    assert not (await upstream.call_tool("guarded__echo", {"text": "x"}, WRITER)).is_error


@pytest.mark.parametrize("protocol", ["2026-07-28", "2025-11-25"])
async def test_the_listing_is_fetched_again_when_the_upstream_says_it_changed(
    protocol: str, closing: list[Upstream]
) -> None:
    with upstream_servers.serve_http(upstream_servers.build_server(ttl_ms=60_000)) as url:
        upstream = Upstream(configured("growing", url=url, protocol=protocol))
        closing.append(upstream)
        await upstream.list_tools(ADMIN)

        await upstream.call_tool("growing__grow", {"name": "sprout"}, ADMIN)

        await eventually(lambda: lists(upstream, "growing__sprout"), timeout_s=5)
        await upstream.close()


async def test_the_listing_is_fetched_again_when_its_ttl_passes(closing: list[Upstream]) -> None:
    server = upstream_servers.build_server(ttl_ms=300)
    with upstream_servers.serve_http(server) as url:
        upstream = Upstream(configured("timed", url=url))
        closing.append(upstream)
        await upstream.list_tools(ADMIN)

        server.add_tool(lambda: "quiet", name="quiet")  # no notification: only the TTL tells

        assert not await lists(upstream, "timed__quiet")
        await eventually(lambda: lists(upstream, "timed__quiet"), timeout_s=5)
        await upstream.close()


async def test_collisions_are_reported_never_shadowed(closing: list[Upstream]) -> None:
    with upstream_servers.serve_http(upstream_servers.build_server(list_echo_twice=True)) as url:
        config = parse(yaml.safe_dump({"upstreams": [{"name": "twice", "url": url}]}), "test.yaml")
        async with Upstreams(config) as upstreams:
            listed = [tool.name for tool in await upstreams.providers()[0].list_tools(ADMIN)]

            collisions = upstreams.collisions(reserved=[("sophia", "twice__add")])

    assert listed.count("twice__echo") == 1
    assert collisions == {"twice__echo": ["twice", "twice"], "twice__add": ["sophia", "twice"]}


async def test_a_changed_file_adds_and_removes_upstreams(http_url: str, tmp_path: Path) -> None:
    path = tmp_path / "upstreams.yaml"

    def write(*names: str) -> None:
        path.write_text(yaml.safe_dump({"upstreams": [{"name": name, "url": http_url} for name in names]}))

    write("first")
    upstreams = Upstreams(load(path))
    async with upstreams, ConfigWatcher(path, upstreams.apply, load(path), poll_s=0.02) as watcher:
        first = upstreams.get("first")
        write("first", "second")
        await eventually(lambda: [u.name for u in upstreams.providers()] == ["first", "second"])
        assert upstreams.get("first") is first  # unchanged: kept, with its session

        path.write_text("upstreams:\n  - name: first\n    url: 12\n")
        assert not await watcher.check()  # read (here or by the watcher's own poll), not applied
        assert [u.name for u in upstreams.providers()] == ["first", "second"]  # the last good one

        write("second")
        await eventually(lambda: [u.name for u in upstreams.providers()] == ["second"])
        assert first is not None
        with pytest.raises(ToolUnavailable, match="removed"):
            await first.call_tool("first__echo", {"text": "x"}, ADMIN)


async def test_a_replaced_upstream_finishes_the_calls_in_flight(http_url: str) -> None:
    def config(timeout_s: float) -> Any:
        return parse(
            yaml.safe_dump({"upstreams": [{"name": "web", "url": http_url, "timeout_s": timeout_s}]}), "t"
        )

    async with Upstreams(config(5)) as upstreams:
        old = upstreams.get("web")
        assert old is not None
        in_flight = asyncio.create_task(old.call_tool("web__slow", {"seconds": 0.5}, ADMIN))
        await eventually(lambda: old.session is not None and old.session.in_flight == 1)

        await upstreams.apply(config(6))
        new = upstreams.get("web")

        assert new is not old
        assert new is not None
        assert new.config.timeout_s == 6
        assert text(await in_flight) == "done"
        echoed = await old.call_tool("web__echo", {"text": "routed"}, ADMIN)  # a stale route: sent on
        assert text(echoed) == "routed"
        await eventually(lambda: old.session is None)
