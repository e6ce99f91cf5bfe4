"""The processes of bench/mcp_gateway.py that speak MCP: the echo upstream, and the sequential callers.

    python bench/harness/mcp_load.py upstream --port 8765     # the upstream, until SIGTERM
    python bench/harness/mcp_load.py latency < plan.json      # the calls of a plan; JSON on stdout

The upstream is the SDK's `MCPServer` with one read-only tool, `echo`, served as the gateway is
served: Streamable HTTP at `/mcp`, stateless, JSON responses, uvicorn with uvloop and httptools,
no access log; `/healthz` answers 200 once it serves.

`latency` reads a plan, `{"calls", "warmup", "pairs": [{"name", "a": side, "b": side}]}`, and for
each pair makes `warmup` then `calls` calls to each side, one at a time, A and B alternated (A
first on even turns, B on odd) so that whatever slows the machine slows both. A side is an SDK
`Client` calling a tool (`{"kind": "sdk", "url", "token", "mode", "tool", "arguments"}`) or one
plain HTTP request over a kept-alive httpx connection (`{"kind": "http", "method", "url",
"headers", "body", "expect"}`, where `expect` is a text the body must hold). It answers, per pair
and side, every successful call's milliseconds, the errors and the first error.

A script only, never imported: in bench/, `mcp` names bench/mcp_gateway.py, which would shadow the SDK;
run from here, it does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import httpx2
import orjson
import uvicorn
import uvloop
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp_types import TextContent, ToolAnnotations
from starlette.requests import Request
from starlette.responses import Response

HOST = "127.0.0.1"
TIMEOUT_S = 30.0

Call = Callable[[], Awaitable[str | None]]
"""One call; None when it succeeded, else what went wrong."""


def echo_server() -> MCPServer:
    server = MCPServer("bench-upstream", log_level="ERROR")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, title="Echo"))
    def echo(text: str) -> str:
        """Answer `text`."""
        return text

    return server


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def serve_upstream(port: int) -> None:
    app = echo_server().streamable_http_app(json_response=True, stateless_http=True)
    app.add_route("/healthz", healthz)
    uvicorn.run(
        app, host=HOST, port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


@asynccontextmanager
async def sdk_side(side: dict[str, Any]) -> AsyncIterator[Call]:
    headers = {"Authorization": f"Bearer {side['token']}"} if side.get("token") else {}
    http = httpx2.AsyncClient(headers=headers, timeout=TIMEOUT_S)
    transport = streamable_http_client(side["url"], http_client=http)
    async with http, Client(transport, mode=side["mode"]) as client:

        async def call() -> str | None:
            result = await client.call_tool(side["tool"], side["arguments"])
            if not result.is_error:
                return None
            block = result.content[0] if result.content else None
            return block.text[:300] if isinstance(block, TextContent) else "a tool error"

        yield call


@asynccontextmanager
async def http_side(side: dict[str, Any]) -> AsyncIterator[Call]:
    body = side["body"].encode() if side.get("body") is not None else None
    expect = side["expect"].encode() if side.get("expect") else b""
    async with httpx.AsyncClient(headers=side["headers"], timeout=TIMEOUT_S) as http:

        async def call() -> str | None:
            response = await http.request(side["method"], side["url"], content=body)
            if response.status_code == 200 and expect in response.content:
                return None
            return f"{response.status_code}: {response.text[:300]}"

        yield call


async def timed(call: Call, times: list[float], errors: list[str]) -> None:
    started = time.perf_counter()
    try:
        problem = await call()
    except Exception as error:  # counted and shown: one failed call must not end the plan
        problem = f"{type(error).__name__}: {error}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if problem is None:
        times.append(round(elapsed_ms, 4))
    else:
        errors.append(problem)


async def run_pair(pair: dict[str, Any], calls: int, warmup: int) -> dict[str, Any]:
    sides = {"sdk": sdk_side, "http": http_side}
    async with AsyncExitStack() as stack:
        call_a = await stack.enter_async_context(sides[pair["a"]["kind"]](pair["a"]))
        call_b = await stack.enter_async_context(sides[pair["b"]["kind"]](pair["b"]))
        times: dict[str, list[float]] = {"a": [], "b": []}
        errors: dict[str, list[str]] = {"a": [], "b": []}
        for turn in range(warmup + calls):
            if turn == warmup:
                times, errors = {"a": [], "b": []}, {"a": [], "b": []}
            order = (("a", call_a), ("b", call_b)) if turn % 2 == 0 else (("b", call_b), ("a", call_a))
            for side, call in order:
                await timed(call, times[side], errors[side])
    return {
        side: {"ms": times[side], "errors": len(errors[side]), "first_error": next(iter(errors[side]), None)}
        for side in ("a", "b")
    }


async def latency(plan: dict[str, Any]) -> dict[str, Any]:
    results = {}
    for pair in plan["pairs"]:
        print(f"    {pair['name']}: {plan['calls']:,} calls a side", file=sys.stderr, flush=True)
        results[pair["name"]] = await run_pair(pair, plan["calls"], plan["warmup"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upstream", help="serve the echo upstream").add_argument(
        "--port", type=int, required=True
    )
    commands.add_parser("latency", help="run the plan on stdin")
    options = parser.parse_args()
    if options.command == "upstream":
        serve_upstream(options.port)
    else:
        result = uvloop.run(latency(orjson.loads(sys.stdin.buffer.read())))
        sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
