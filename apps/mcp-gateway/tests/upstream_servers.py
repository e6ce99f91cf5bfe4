"""Real MCP servers for the upstream tests, written with the SDK's `MCPServer`.

`python upstream_servers.py [--ttl-ms N]` serves `build_server()` over stdio (the tests start it
with `sys.executable` and this file's path); `serve_http(build_server())` serves it over Streamable
HTTP from a uvicorn in a thread of the test process, on a free port, where the test can still
change it. Both speak both protocol eras.

| tool | annotations | does |
| --- | --- | --- |
| `echo` | read-only | answers its `text` |
| `add` | none | `a + b`, with an output schema |
| `slow` | none | sleeps `seconds`, then answers |
| `fail` | none | raises: a tool error, not an outage |
| `crash` | none | ends the process mid-call (`os._exit`) |
| `crash_once` | none | ends the process if `marker` is missing (creating it), else answers |
| `crash_once_read_only` | read-only | the same |
| `spawn_sleeper` | none | starts a `sleep` in the server's process group; answers its pid |
| `grow` | none | adds a tool `name` and says the list changed (both eras' ways) |
| `count` | none | reports progress `steps` times (`step i`, i of steps), then answers `steps` |
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import MCPServer
from mcp.server.caching import CacheHint
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

SCRIPT = Path(__file__)


def build_server(
    ttl_ms: int | None = None, *, list_echo_twice: bool = False, listen_delay_s: float = 0.0
) -> MCPServer:
    """The test upstream; `ttl_ms` is the cache hint on its tools/list results (2026-07-28);
    `list_echo_twice` makes it list `echo` twice (as a misbehaving server could);
    `listen_delay_s` holds back its acknowledgement of `subscriptions/listen` (a busy server)."""
    hints = {"tools/list": CacheHint(ttl_ms=ttl_ms)} if ttl_ms is not None else None
    middleware = [_echo_listed_twice] if list_echo_twice else []
    if listen_delay_s > 0:

        async def slow_listen(ctx: Any, call_next: Any) -> Any:
            if ctx.method == "subscriptions/listen":
                await anyio.sleep(listen_delay_s)
            return await call_next(ctx)

        middleware.append(slow_listen)
    server = MCPServer(
        "test-upstream",
        cache_hints=hints,  # type: ignore[arg-type]
        log_level="ERROR",
        middleware=middleware or None,
    )

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, title="Echo"))
    def echo(text: str) -> str:
        """Answer `text`."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """The sum of `a` and `b`."""
        return a + b

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep `seconds`, then answer."""
        await anyio.sleep(seconds)
        return "done"

    @server.tool()
    def fail() -> str:
        """Always fails, as a tool."""
        raise ToolError("fail always fails")

    @server.tool()
    def crash() -> str:
        """End the server process in the middle of the call."""
        os._exit(3)

    def crash_unless_marked(marker: str) -> str:
        path = Path(marker)
        if not path.exists():
            path.write_text("crashed once")
            os._exit(4)
        return "survived"

    server.add_tool(crash_unless_marked, name="crash_once")
    server.add_tool(
        crash_unless_marked, name="crash_once_read_only", annotations=ToolAnnotations(read_only_hint=True)
    )

    @server.tool()
    def spawn_sleeper() -> int:
        """A `sleep` child in this server's process group (what a careless server leaves behind)."""
        return subprocess.Popen(["sleep", "60"], start_new_session=False).pid

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called `name`, and tell the clients the list changed."""

        def grown() -> str:
            return name

        server.add_tool(grown, name=name)
        await ctx.notify_tools_changed()
        if ctx.protocol_version == "2025-11-25":
            await ctx.session.send_tool_list_changed()
        return name

    @server.tool()
    async def count(steps: int, ctx: Context) -> int:
        """Report progress `steps` times, then answer `steps`."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return steps

    return server


async def _echo_listed_twice(ctx: Any, call_next: Any) -> Any:
    result = await call_next(ctx)
    if ctx.method == "tools/list":  # the middleware sees the wire form: a dict
        result["tools"] += [tool for tool in result["tools"] if tool["name"] == "echo"]
    return result


@contextmanager
def serve_http(server: MCPServer, port: int | None = None, wrap: Any = None) -> Iterator[str]:
    """`server` over Streamable HTTP in a thread (on `port`, or a free one); yields its URL, stops
    on exit (cutting the streams still open after 0.2 s, as a server going down would). `wrap`, if
    given, takes the server's ASGI app and gives the one served (to watch the requests)."""
    from sophia.engines.process import free_port  # here: the stdio server starts 0.25 s sooner without it

    port = port or free_port()
    app = server.streamable_http_app()
    if wrap is not None:
        app = wrap(app)
    stop_s: Any = 0.2  # typed int, used as a float (asyncio.wait_for): streams still open are cut then
    http = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=stop_s
        )
    )
    thread = threading.Thread(target=http.run, name=f"upstream-http-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not http.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test upstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        http.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ttl-ms", type=int, default=None)
    build_server(parser.parse_args().ttl_ms).run("stdio")


def breaking_its_output_schema() -> Server[Any]:
    """One tool, `count`, whose structured result does not match the output schema it lists."""
    tool = types.Tool(
        name="count",
        input_schema={"type": "object"},
        output_schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
    )

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: Any) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text='{"n": "many"}')], structured_content={"n": "many"}
        )

    return Server("liar", on_list_tools=list_tools, on_call_tool=call_tool)
