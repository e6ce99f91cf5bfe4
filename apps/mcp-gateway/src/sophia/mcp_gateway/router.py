"""Routing between providers: one list of every provider's tools (those the caller may see), and
each call handed to the provider that owns the name, under the gateway's own time limit, counted,
timed and audited.

A provider that cannot list now (its upstream is down) leaves its tools out of the list, and the
others are listed; a call to one of its tools is answered with a tool error saying so. A call never
waits for the listing of a provider after the one that owns its name: a hung upstream holds up the
calls of its own tools, not Sophia's. A name two
providers both claim is listed once, for the first provider, and the collision is logged and kept
in `collisions` (the configuration refuses duplicate prefixes, so this takes a misbehaving
upstream).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mcp_types as types

from sophia.mcp_gateway.audit import AuditTrail
from sophia.mcp_gateway.config import ViewConfig
from sophia.mcp_gateway.metrics import CALL_SECONDS, CALLS, LISTS, PROVIDER_UNAVAILABLE
from sophia.mcp_gateway.providers import Caller, Provider, ToolUnavailable, tool_error
from sophia.shared.logging import get_logger

log = get_logger(__name__)

INDEX_TTL_S = 5.0
"""How long a caller scope's name -> provider index is trusted before the providers are listed
again (in the background: a call meanwhile goes by the index it has)."""


MAX_SCHEMAS = 20_000
MAX_ECHOED_NAME = 200
"""Most characters of a requested tool name an error repeats (the name is the client's, of any length)."""


class UnknownTool(Exception):
    """No provider offers this name to this caller (a protocol error: invalid params)."""


def echoed(name: str) -> str:
    """`name` as an error may repeat it: quoted, cut at `MAX_ECHOED_NAME` characters (marked `…`)."""
    return repr(name) if len(name) <= MAX_ECHOED_NAME else f"{name[:MAX_ECHOED_NAME]!r}…"


class Router:
    def __init__(
        self,
        providers: Callable[[], Sequence[Provider]],
        audit: AuditTrail | None,
        timeout_s: float,
        views: Callable[[], Sequence[ViewConfig]] = tuple,
    ) -> None:
        self.providers = providers
        """The providers now (the upstreams change when their file does)."""
        self.views = views
        """The views now: which tools the callers they name may see and call."""
        self.audit = audit
        self.timeout_s = timeout_s
        self.collisions: dict[str, list[str]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        """Each listed tool's input schema by name, for the SDK's check of `Mcp-Param-*` headers
        (which would otherwise list every tool on every call to read one schema)."""
        self._index: dict[str, tuple[float, dict[str, Provider]]] = {}
        """Per viewer (a scope, or a scope and a key named by a view): when it was built, and the
        provider of each name."""
        self._generation = 0
        """Bumped by `forget`: a listing begun before is not kept as an index."""
        self._background: set[asyncio.Future[Any]] = set()
        """Listings no caller waits for (an index built on after a call knew its provider)."""
        self._refreshing: set[str] = set()
        """The viewers whose stale index is being built again."""

    async def list_tools(self, caller: Caller) -> list[types.Tool]:
        providers = list(self.providers())
        listings = [asyncio.ensure_future(self._list(provider, caller)) for provider in providers]
        return await self._indexed(caller, providers, listings, self._generation)

    async def _indexed(
        self,
        caller: Caller,
        providers: list[Provider],
        listings: Sequence[asyncio.Future[list[types.Tool]]],
        generation: int,
    ) -> list[types.Tool]:
        """Every provider's tools the caller may see, once each has listed, kept as its index."""
        LISTS.inc()
        answers = await asyncio.gather(*listings)
        tools: list[types.Tool] = []
        owners: dict[str, Provider] = {}
        views = [view for view in self.views() if view.applies_to(caller.prefix, caller.scope)]
        for provider, listed in zip(providers, answers, strict=True):
            for tool in listed:
                if views and not any(view.allows(tool.name) for view in views):
                    continue
                owner = owners.get(tool.name)
                if owner is not None:
                    self._collided(tool.name, owner, provider)
                    continue
                owners[tool.name] = provider
                tools.append(tool)
                self.schemas[tool.name] = tool.input_schema
        built_at = time.monotonic() if generation == self._generation else -math.inf  # stale at once
        self._index[self._viewer(caller)] = (built_at, owners)
        if len(self.schemas) > MAX_SCHEMAS:  # names come and go with the upstreams: start again
            self.schemas.clear()  # in place: the SDK holds this dict's `get`
            self.schemas.update((tool.name, tool.input_schema) for tool in tools)
        return tools

    def forget(self) -> None:
        """The views or providers changed: each caller's index is built again at its next call,
        so a tool a new view takes away is not callable a moment longer."""
        self._index.clear()
        self._generation += 1

    def _viewer(self, caller: Caller) -> str:
        """What decides which tools a caller sees: its scope, and its key where a view names it."""
        named = any(caller.prefix in view.keys for view in self.views())
        return f"{caller.scope}:{caller.prefix}" if named else caller.scope

    async def _list(self, provider: Provider, caller: Caller) -> list[types.Tool]:
        try:
            return await asyncio.wait_for(provider.list_tools(caller), self.timeout_s)
        except (ToolUnavailable, TimeoutError) as unavailable:
            PROVIDER_UNAVAILABLE.labels(provider.name).inc()
            log.warning("mcp_provider_unlisted", provider=provider.name, reason=str(unavailable) or "timeout")
            return []
        except Exception:  # a provider's failure never takes the others' tools with it
            PROVIDER_UNAVAILABLE.labels(provider.name).inc()
            log.exception("mcp_provider_unlisted", provider=provider.name)
            return []

    def _collided(self, name: str, kept: Provider, dropped: Provider) -> None:
        claimants = self.collisions.setdefault(name, [kept.name])
        if dropped.name not in claimants:
            claimants.append(dropped.name)
            log.warning("mcp_tool_name_collision", tool=name, kept=kept.name, dropped=dropped.name)

    async def owner(self, name: str, caller: Caller) -> Provider:
        viewer = self._viewer(caller)
        built = self._index.get(viewer)
        if built is not None and name in built[1]:
            if time.monotonic() - built[0] > INDEX_TTL_S and viewer not in self._refreshing:
                self._refreshing.add(viewer)  # listed again behind this call, not before it
                refresh = self._keep(self.list_tools(caller))
                refresh.add_done_callback(lambda _: self._refreshing.discard(viewer))
            return built[1][name]
        provider = await self._first_lister(name, caller)
        if provider is None:
            raise UnknownTool(f"Unknown tool {echoed(name)}: tools/list names the tools this key may call.")
        return provider

    async def _first_lister(self, name: str, caller: Caller) -> Provider | None:
        """The provider of `name` for this caller: the first, in order, that lists it (as a collision
        is decided), known once it and those before it have listed; the whole index is built on
        meanwhile. None when no provider lists it or no view lets the caller see it."""
        views = [view for view in self.views() if view.applies_to(caller.prefix, caller.scope)]
        generation = self._generation
        providers = list(self.providers())
        listings = [asyncio.ensure_future(self._list(provider, caller)) for provider in providers]
        self._keep(self._indexed(caller, providers, listings, generation))
        if views and not any(view.allows(name) for view in views):
            return None
        for provider, listing in zip(providers, listings, strict=True):
            # shielded: a caller that goes away does not cancel what the index is built from
            if any(tool.name == name for tool in await asyncio.shield(listing)):
                return provider
        return None

    def _keep(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        """`work` run on with no caller waiting for it, until done or `stop`."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def stop(self) -> None:
        """The listings no caller waits for end (the gateway is stopping)."""
        for task in self._background:
            task.cancel()

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        provider = await self.owner(name, caller)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await asyncio.wait_for(provider.call_tool(name, arguments, caller), self.timeout_s)
            outcome = "error" if result.is_error else "ok"
        except ToolUnavailable as unavailable:
            PROVIDER_UNAVAILABLE.labels(provider.name).inc()
            outcome = "unavailable"
            result = tool_error(f"{name} is unavailable now: {unavailable.detail} Try again later.")
        except TimeoutError:
            outcome = "timeout"
            result = tool_error(f"{name} did not answer within {self.timeout_s:g} s; the call was cancelled.")
        finally:
            elapsed = time.perf_counter() - started
            CALLS.labels(provider.name, name, outcome).inc()
            CALL_SECONDS.labels(provider.name, name).observe(elapsed)
            if self.audit is not None:
                self.audit.record(caller, name, sorted(arguments), outcome, elapsed)
        return result
