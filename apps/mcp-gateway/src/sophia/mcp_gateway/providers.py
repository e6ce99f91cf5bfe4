"""What the gateway routes between: providers of tools. Sophia's own tools are one provider
(`sophia.mcp_gateway.sophia_tools`); each upstream MCP server is another
(`sophia.mcp_gateway.upstreams`). The gateway lists every provider's tools under the names the
client sees, and hands a call to the provider that owns the name.

A provider never raises for a failure of the tool itself: it answers a `CallToolResult` with
`is_error` and a message the model can act on. It raises `ToolUnavailable` when it cannot run
the tool now (its upstream is down, its breaker is open, the call timed out), which the gateway
answers as a tool error saying so, and never as a failure of the whole request.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types

from sophia.database.keys import SCOPES


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: a Sophia API key (or a JWT's subject) and its scope."""

    key_id: str
    """What rate limits count by: the key's id, or `jwt:<issuer>:<subject>`."""
    prefix: str
    """The key's public prefix, or the token's subject."""
    scope: str
    """`read`, `write` or `admin` (a JWT's scopes mapped onto these)."""
    kind: str = "key"
    """`key` (a Sophia API key) or `jwt`."""

    @property
    def actor(self) -> str:
        """How the caller is named in the audit trail and the logs (never a secret)."""
        return f"{self.kind}/{self.prefix}"

    def has_scope(self, needed: str) -> bool:
        """Whether its scope is `needed` or one above it (read < write < admin)."""
        return self.scope in SCOPES and SCOPES.index(self.scope) >= SCOPES.index(needed)


class Progress(Protocol):
    """Reports a call's progress to its client (the SDK's progress callback)."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None: ...


PROGRESS: ContextVar[Progress | None] = ContextVar("sophia_mcp_progress", default=None)
"""Where the provider running a tool call reports its progress, set by the gateway for each call
whose client asked for progress (a `progressToken`); None otherwise. An upstream's progress
notifications, under the gateway's own token, are sent on under the client's."""


def tool_error(message: str) -> types.CallToolResult:
    """A tool's failure as the model reads it: one text block, `is_error` set."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class ToolUnavailable(Exception):
    """The provider cannot run the tool now; `detail` says why, for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Provider(Protocol):
    """A source of tools: Sophia's own, or one upstream MCP server."""

    @property
    def name(self) -> str:
        """Stable, unique among providers (`sophia`, or the upstream's name in the config)."""
        ...

    async def list_tools(self, caller: Caller) -> list[types.Tool]:
        """The tools this caller may see, named as the client sees them (namespaced), with their
        input and output schemas and annotations untouched. `ToolUnavailable` when the provider
        cannot say now (the gateway lists the others)."""
        ...

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        """Run the tool called `name` (as the client sees it) with `arguments`."""
        ...
