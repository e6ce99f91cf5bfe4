"""The gateway's metrics: calls, errors and latency per tool (as the client names it), by the
provider that owns it. Upstreams add their own (process count, breaker states)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "sophia_mcp_tool_calls_total",
    "Tool calls through the gateway, by outcome",
    ["provider", "tool", "outcome"],
)
CALL_SECONDS = Histogram(
    "sophia_mcp_tool_call_seconds",
    "Tool calls through the gateway, end to end",
    ["provider", "tool"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LISTS = Counter("sophia_mcp_tool_lists_total", "tools/list answered by the gateway")
PROVIDER_UNAVAILABLE = Counter(
    "sophia_mcp_provider_unavailable_total", "Lists or calls a provider could not serve", ["provider"]
)
LEAN_CALLS = Counter(
    "sophia_mcp_lean_calls_total",
    "Plain 2026-07-28 tools/call answered by the gateway itself, not the SDK's server (fast.PlainCalls)",
)
