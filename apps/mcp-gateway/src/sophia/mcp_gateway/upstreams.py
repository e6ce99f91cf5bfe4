"""Upstream MCP servers as providers: one `Upstream` per entry of the upstreams file, all of them
held by `Upstreams`, which moves from one configuration to the next without dropping a call.

The contract of an upstream:
- One client session per gateway process, opened on first use: a stdio command is started then,
  in a process group of its own, stopped after `idle_s` without a call and started again on the
  next; a Streamable HTTP server is reached with the SDK's client. An open session is checked
  every `ping_s` (ping; `server/discover` on 2026-07-28, which has no ping) and closed if it fails.
- Closing a stdio session closes the command's stdin, then SIGTERMs and at last SIGKILLs its
  whole process group, and reaps it: nothing it started outlives it.
- A dead session (the process ended, the connection dropped) is opened again by the next request.
- Every request runs under `timeout_s` and the upstream's `CircuitBreaker`, which counts outages
  (a session that cannot open, a lost connection, no answer in time), never a tool's own errors.
  A call to a tool annotated read-only or idempotent is tried up to `attempts` times when the
  upstream fails; any other tool once, as it may have run.
- Its tools are listed as `<prefix>__<tool>`, schemas and annotations untouched. The listing is
  cached until the upstream says it changed (`notifications/tools/list_changed` on 2025-11-25,
  a `subscriptions/listen` event on 2026-07-28) or its `ttlMs` passes (2026-07-28).
- `list_tools` and `call_tool` raise `ToolUnavailable` with the reason when it cannot serve now.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from mcp import Client, MCPError
from mcp.client import Transport
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.message import SessionMessage
from mcp.shared.tool_name_validation import TOOL_NAME_REGEX
from mcp_types import CONNECTION_CLOSED
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from sophia.mcp_gateway.config import SEPARATOR, GatewayConfig, UpstreamConfig
from sophia.mcp_gateway.direct import (
    CLIENT_INFO,
    ERA,
    DirectCalls,
    DirectFailure,
    Refused,
    schema_needs_headers,
)
from sophia.mcp_gateway.providers import PROGRESS, Caller, ToolUnavailable, tool_error
from sophia.shared.logging import get_logger
from sophia.shared.process import die_with_parent
from sophia.shared.resilience import BreakerOpen, BreakerState, CircuitBreaker, retry

T = TypeVar("T")

log = get_logger(__name__)

REQUESTS = Counter(
    "sophia_mcp_upstream_requests_total",
    "Requests to upstream MCP servers (each try of a call counts), by outcome",
    ["upstream", "tool", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "sophia_mcp_upstream_request_seconds",
    "Requests to upstream MCP servers, session opening included",
    ["upstream", "tool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SESSIONS_OPENED = Counter(
    "sophia_mcp_upstream_sessions_opened_total", "Upstream sessions opened", ["upstream"]
)
LIVE_PROCESSES = Gauge(
    "sophia_mcp_upstream_processes", "stdio upstream processes running", multiprocess_mode="livesum"
)

LIST_TOOLS = "tools/list"
"""The `tool` label of listing requests."""
MAX_LINE_BYTES = 32 * 1024 * 1024
STOP_GRACE_S = 2.0
"""How long a stopping command has after its stdin closes, and again after SIGTERM."""
MAX_LIST_PAGES = 100
RELISTEN_S = 1.0
MODES = {"auto": "auto", "2025-11-25": "legacy", "2026-07-28": "2026-07-28"}
"""Config `protocol` -> the SDK client's `mode`."""


class Outage(Exception):
    """The upstream could not be reached, or did not answer in time: its breaker counts it, and a
    read-only call may be tried again."""


class SessionGone(Outage):
    """A 2025-11-25 HTTP server no longer knows the session (it restarted) and refused the request
    unrun: any call may be sent again, on a new session."""


def _session_gone(error: MCPError) -> bool:
    """The SDK's HTTP client turns the spec's 404 for an unknown `MCP-Session-Id` into an error
    that only its message tells apart: "Session not found" (the server's body, as the SDK's and
    TypeScript servers word it) or "Session terminated" (the client's own, for a body-less 404)."""
    message = error.message.lower()
    return "session" in message and ("not found" in message or "terminated" in message)


def _describe(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, MCPError):
        return error.message
    return str(error) or type(error).__name__


class UpstreamProcess:
    """A stdio upstream's command, in a process group of its own (and SIGKILLed with the gateway),
    spoken to as newline-delimited JSON-RPC over its stdin and stdout."""

    def __init__(self, config: UpstreamConfig, on_exit: Callable[[], None]) -> None:
        self.config = config
        self.on_exit = on_exit
        self.process: asyncio.subprocess.Process | None = None
        self.graceful = False
        """Whether stopping it begins by asking (closing its stdin and waiting): only once it has
        answered the handshake, and until it stops answering."""
        self._stopping: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[tuple[Any, Any]]:
        """The session's streams while the command runs; on exit the whole group is stopped."""
        assert self.config.command is not None
        process = self.process = await asyncio.create_subprocess_exec(
            self.config.command,
            *self.config.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=self.config.cwd,
            env=get_default_environment() | dict(self.config.env),
            start_new_session=True,  # its own group: what it starts is stopped with it
            preexec_fn=die_with_parent,
            limit=MAX_LINE_BYTES,
        )
        LIVE_PROCESSES.inc()
        log.info("mcp_upstream_started", upstream=self.config.name, pid=process.pid)
        incoming, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._read, process, incoming)
                group.start_soon(self._write, process, outgoing)
                try:
                    yield read_stream, write_stream
                finally:
                    group.cancel_scope.cancel()
        finally:
            for stream in (read_stream, write_stream, incoming, outgoing):
                stream.close()
            # A task of its own, shielded: a cancelled session still stops and reaps its command.
            self._stopping = asyncio.ensure_future(self._stop(process))
            await asyncio.shield(self._stopping)

    async def stopped(self) -> None:
        """Until the command's group is gone and the command reaped (once it was started)."""
        if self._stopping is not None:
            await asyncio.shield(self._stopping)

    async def _read(self, process: asyncio.subprocess.Process, incoming: Any) -> None:
        assert process.stdout is not None
        async with incoming:
            while True:
                try:
                    line = await process.stdout.readline()
                except ValueError:  # a line over MAX_LINE_BYTES: the stream cannot be trusted on
                    log.error(
                        "mcp_upstream_line_too_long", upstream=self.config.name, max_bytes=MAX_LINE_BYTES
                    )
                    line = b""
                if not line:
                    self.on_exit()  # before the session hears the stream closed: the reason comes first
                    return
                if not line.strip():
                    continue
                try:
                    item: SessionMessage | Exception = SessionMessage(
                        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    )
                except ValueError as error:
                    item = error  # the session reports it; the stream goes on
                try:
                    await incoming.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    async def _write(self, process: asyncio.subprocess.Process, outgoing: Any) -> None:
        assert process.stdin is not None
        try:
            async with outgoing:
                async for message in outgoing:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    process.stdin.write(data.encode() + b"\n")
                    await process.stdin.drain()
        except (ConnectionError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            _signal_group(process.pid, signal.SIGKILL)  # it stopped reading: its stdout ends, and the session

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """Stdin closed (the MCP way to ask), then SIGTERM, then SIGKILL, to the whole group: even
        when the leader left at once, what it started may not have. Reaped."""
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        if self.graceful:
            await _until(lambda: process.returncode is not None)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _signal_group(process.pid, sig):
                break
            if await _until(lambda: process.returncode is not None and not _signal_group(process.pid, 0)):
                break
        with anyio.move_on_after(STOP_GRACE_S):
            await process.wait()  # also until its pipes close; returncode says it is reaped
        LIVE_PROCESSES.dec()
        log.info("mcp_upstream_stopped", upstream=self.config.name, pid=process.pid, code=process.returncode)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group (a leader's pid is its pgid); False once no member is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: the group is not gone
        return True
    return True


async def _until(condition: Callable[[], bool], timeout_s: float = STOP_GRACE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class Session:
    """One client session to an upstream, owned by a task of its own: the transport's task groups
    must be left by the task that entered them, and requests come from many. It ends when asked,
    when a stdio command has been idle `idle_s`, when a health check fails, or when its process or
    connection is lost; a new one is opened for the next request."""

    def __init__(self, config: UpstreamConfig, on_tools_changed: Callable[[], None]) -> None:
        self.config = config
        self.on_tools_changed = on_tools_changed
        self.process = (
            UpstreamProcess(config, lambda: self.lose("the process ended")) if config.command else None
        )
        self.client: Client | None = None
        self.ended_because: str | None = None
        """Set once it takes no more requests (with why)."""
        self.in_flight = 0
        self.last_used_at = time.monotonic()
        self._opened = asyncio.Event()
        self._end = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-upstream-{self.config.name}")

    def finished(self) -> bool:
        """Closed, its process (if any) stopped and reaped."""
        return self._task is not None and self._task.done()

    async def ready(self) -> Client:
        """The open client; `Outage` if the session could not open or has ended."""
        await self._opened.wait()
        if self.client is None or self.ended_because is not None:
            raise Outage(self.ended_because or "the session did not open")
        return self.client

    def lose(self, reason: str, *, responsive: bool = True) -> None:
        """No more requests on this session: it closes (what it was doing fails). A command that
        stopped answering (`responsive=False`) is not asked to end: it is terminated."""
        if self.ended_because is None:
            self.ended_because = reason
        if not responsive and self.process is not None:
            self.process.graceful = False
        self._end.set()

    async def close(self) -> None:
        self.lose("closed by the gateway")
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.process is not None:
            await self.process.stopped()

    def _transport(self, stack: AsyncExitStack) -> Transport:
        if self.process is not None:
            return self.process.streams()
        assert self.config.url is not None
        http = httpx2.AsyncClient(headers=dict(self.config.headers), timeout=httpx2.Timeout(30, read=300))

        async def release() -> None:  # its sockets, even when the session's close ran out of time
            with anyio.move_on_after(STOP_GRACE_S, shield=True):
                await http.aclose()

        stack.push_async_callback(release)
        return streamable_http_client(self.config.url, http_client=http)

    async def _run(self) -> None:
        closing = anyio.CancelScope()
        # What ended the session, kept: a close running past its deadline is cancelled, and the
        # cancel scope would swallow it with that cancellation.
        failed: BaseException | None = None
        try:
            with closing:
                async with AsyncExitStack() as stack:
                    try:
                        client = Client(
                            self._transport(stack),
                            mode=MODES[self.config.protocol],
                            cache=None,  # the upstream's listing is cached by `Upstream`, by its own rules
                            message_handler=self._on_message,
                            client_info=CLIENT_INFO,
                        )
                        async with asyncio.timeout(self.config.timeout_s):
                            await stack.enter_async_context(client)
                        self.client = client
                        # idle from now, not from when it started opening
                        self.last_used_at = time.monotonic()
                        if self.process is not None:
                            self.process.graceful = True
                        SESSIONS_OPENED.labels(self.config.name).inc()
                        log.info(
                            "mcp_upstream_opened", upstream=self.config.name, protocol=client.protocol_version
                        )
                        async with anyio.create_task_group() as group:
                            if client.protocol_version != "2025-11-25":
                                await self._listening(group, client)
                            self._opened.set()
                            await self._serve(client)
                            group.cancel_scope.cancel()
                    except Exception as error:
                        failed = error
                        raise
                    finally:  # ending it (a 2025-11-25 server's DELETE, a command's stop) is bounded too
                        closing.deadline = anyio.current_time() + self.config.timeout_s
            # past the deadline: a command's stop goes on (`close` waits for it), a DELETE is dropped
            if closing.cancelled_caught:
                log.warning(
                    "mcp_upstream_close_slow", upstream=self.config.name, waited_s=self.config.timeout_s
                )
                if failed is not None:
                    raise failed
        except TimeoutError:
            self.lose(f"no answer to the handshake within {self.config.timeout_s:g} s", responsive=False)
        except Exception as error:  # the transport failed (refused, dropped): said to every waiter
            self.lose(_describe(error), responsive=False)
            log.warning("mcp_upstream_failed", upstream=self.config.name, error=repr(error))
        finally:
            self.lose(self.ended_because or "closed")
            self._opened.set()
            log.info("mcp_upstream_closed", upstream=self.config.name, reason=self.ended_because)

    async def _serve(self, client: Client) -> None:
        """Until the session is to end: idle too long, a failed health check, or asked to."""
        checked_at = time.monotonic()
        while not self._end.is_set():
            now = time.monotonic()
            wake_at = [self.last_used_at + self.config.idle_s] if self.process is not None else []
            if self.config.ping_s > 0:
                wake_at.append(checked_at + self.config.ping_s)
            with anyio.move_on_after(max(0.0, min(wake_at, default=now + 3600) - now)):
                await self._end.wait()
                return
            now = time.monotonic()
            if (
                self.process is not None
                and self.in_flight == 0
                and now >= self.last_used_at + self.config.idle_s
            ):
                self.lose(f"idle for {self.config.idle_s:g} s")  # before any await: no call takes it now
                return
            if self.config.ping_s > 0 and now >= checked_at + self.config.ping_s:
                checked_at = now
                if not await self._healthy(client):
                    return

    async def _healthy(self, client: Client) -> bool:
        try:
            with anyio.fail_after(self.config.timeout_s):
                if client.protocol_version == "2025-11-25":
                    await client.session.send_ping()
                else:  # ping is gone in 2026-07-28; discover is as cheap and always served
                    await client.session.send_discover(client.protocol_version)
        except (MCPError, TimeoutError, ValidationError) as error:
            log.warning("mcp_upstream_unhealthy", upstream=self.config.name, error=_describe(error))
            self.lose(f"health check failed: {_describe(error)}", responsive=False)
            return False
        return True

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.on_tools_changed()
        elif isinstance(message, Exception):
            log.warning("mcp_upstream_stream_error", upstream=self.config.name, error=_describe(message))

    async def _listening(self, group: anyio.abc.TaskGroup, client: Client) -> None:
        """Start listening, and take no request until the upstream acknowledged it (a change that
        a call of ours causes is then heard), or refused, or `timeout_s` passed (then it is heard
        once the acknowledgement comes)."""
        heard = anyio.Event()
        group.start_soon(self._listen, client, heard)
        with anyio.move_on_after(self.config.timeout_s) as waiting:
            await heard.wait()
        if waiting.cancelled_caught:
            log.warning("mcp_upstream_listen_slow", upstream=self.config.name, waited_s=self.config.timeout_s)

    async def _listen(self, client: Client, listening: anyio.Event) -> None:
        """2026-07-28: tool-list changes arrive on a `subscriptions/listen` stream, listened to
        again when it drops (events may have been missed: the listing is refetched). `listening`
        is set once the stream is acknowledged, or refused."""
        try:
            while True:
                try:
                    async with client.listen(tools_list_changed=True) as subscription:
                        listening.set()
                        async for _event in subscription:
                            self.on_tools_changed()
                    return
                except ListenNotSupportedError:
                    return
                except MCPError as error:
                    log.info("mcp_upstream_no_listen", upstream=self.config.name, error=error.message)
                    return
                except SubscriptionLost:
                    self.on_tools_changed()
                    await anyio.sleep(RELISTEN_S)
        finally:
            listening.set()


class ToolListing:
    """An upstream's tools as it names them, and until when they may be trusted."""

    def __init__(self) -> None:
        self.tools: dict[str, types.Tool] = {}
        self.duplicates: set[str] = set()
        self.with_headers: set[str] = set()
        """Tools whose arguments go in `Mcp-Param-*` headers too (the SDK's client sends those)."""
        self.fetched = False
        self.fresh_until: float | None = None
        """None: until the upstream says the list changed (2025-11-25 has no TTL)."""
        self.generation = 0

    def fresh(self) -> bool:
        return self.fetched and (self.fresh_until is None or time.monotonic() < self.fresh_until)

    def invalidate(self) -> None:
        """The upstream said its tools changed: a listing under way may be older than that."""
        self.generation += 1
        self.expire()

    def expire(self) -> None:
        self.fresh_until = time.monotonic() - 1  # the tools stay known: calls find theirs meanwhile

    def store(self, tools: list[types.Tool], ttl_ms: int | None, generation: int) -> None:
        self.tools = {}
        self.duplicates = set()
        self.with_headers = set()
        for tool in tools:
            if tool.name in self.tools:
                self.duplicates.add(tool.name)
                continue
            self.tools[tool.name] = tool
            if schema_needs_headers(tool.input_schema):
                self.with_headers.add(tool.name)
        self.fetched = True
        if generation != self.generation:  # it changed while we listed: this answer may be old
            self.fresh_until = time.monotonic() - 1
        else:
            self.fresh_until = None if ttl_ms is None else time.monotonic() + ttl_ms / 1000


class Upstream:
    """One upstream MCP server as a provider of tools (see the module's contract)."""

    def __init__(self, config: UpstreamConfig, on_list_changed: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.on_list_changed = on_list_changed
        """Called when the upstream says its tools changed (the gateway tells its clients)."""
        self.breaker = CircuitBreaker(
            f"mcp_upstream:{config.name}",
            failure_rate=config.breaker.failure_rate,
            window=config.breaker.window,
            min_calls=config.breaker.min_calls,
            open_s=config.breaker.open_s,
            failure_types=(Outage,),
        )
        self.listing = ToolListing()
        self.direct = DirectCalls(config.url, config.headers) if config.url is not None else None
        """Plain calls to a 2026-07-28 HTTP upstream go this way (`sophia.mcp_gateway.direct`)."""
        self.successor: Upstream | None = None
        """Set when a new configuration replaced this one: calls still routed here go there."""
        self.session: Session | None = None
        self._retired: str | None = None
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._ended: set[Session] = set()
        self._listing_lock = asyncio.Lock()
        self._listed = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pid(self) -> int | None:
        """The stdio command's pid while its session is open."""
        session = self.session
        if session is None or session.process is None or session.ended_because is not None:
            return None
        return session.process.pid

    def namespaced(self, tool_name: str) -> str:
        return f"{self.config.prefix}{SEPARATOR}{tool_name}"

    def may_use(self, caller: Caller) -> bool:
        return caller.has_scope(self.config.scope)

    def allows(self, tool_name: str) -> bool:
        return self.config.allow_tools is None or tool_name in self.config.allow_tools

    async def list_tools(self, caller: Caller) -> list[types.Tool]:
        if not self.may_use(caller):
            return []
        listing = await self._listing()
        tools = []
        for tool in listing.tools.values():
            name = self.namespaced(tool.name)
            if not self.allows(tool.name):
                continue
            if not TOOL_NAME_REGEX.match(name):
                log.warning("mcp_upstream_tool_name_invalid", upstream=self.name, tool=name)
                continue
            tools.append(tool.model_copy(update={"name": name}))
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        if self._retired is not None:
            if self.successor is None:
                raise ToolUnavailable(f"{self.name} {self._retired}.")
            return await self.successor.call_tool(name, arguments, caller)
        prefix = f"{self.config.prefix}{SEPARATOR}"
        tool_name = name.removeprefix(prefix)
        if not name.startswith(prefix) or not self.allows(tool_name) or not self.may_use(caller):
            return tool_error(f"{self.name} offers no tool {name!r} to this caller.")
        self._in_flight += 1
        self._drained.clear()
        try:
            tool = await self._tool(tool_name)
            if tool is None:
                return tool_error(f"{self.name} has no tool {tool_name!r} (any more).")
            hints = tool.annotations
            repeatable = hints is not None and bool(hints.read_only_hint or hints.idempotent_hint)
            return await self._unavailable_as_error(
                retry(
                    lambda: self._call_once(tool_name, arguments),
                    attempts=self.config.attempts if repeatable else 2,
                    retry_on=(Outage,) if repeatable else (SessionGone,),
                    name=f"{self.name}/{tool_name}",
                )
            )
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def _tool(self, tool_name: str) -> types.Tool | None:
        tool = self.listing.tools.get(tool_name)
        if tool is None:
            tool = (await self._listing(refresh=True)).tools.get(tool_name)
        return tool

    async def _unavailable_as_error(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except Outage as outage:
            raise ToolUnavailable(f"{self.name}: {outage}.") from None
        except BreakerOpen as open_breaker:
            raise ToolUnavailable(
                f"{self.name} is failing (breaker open); retry in {open_breaker.retry_after_s} s."
            ) from None

    async def _listing(self, *, refresh: bool = False) -> ToolListing:
        """The cached listing while fresh and the breaker closed; else listed again, once for all
        who ask meanwhile."""
        if self._retired is not None:
            raise ToolUnavailable(f"{self.name} {self._retired}.")
        listing = self.listing
        if not refresh and listing.fresh() and self.breaker.state is BreakerState.CLOSED:
            return listing
        seen = self._listed
        async with self._listing_lock:
            if self._listed != seen and self.breaker.state is BreakerState.CLOSED:
                return listing  # listed while we waited: as new as what we came for
            generation = listing.generation
            try:
                tools, ttl_ms = await self._unavailable_as_error(self._request(LIST_TOOLS, self._list_all))
            except MCPError as error:  # e.g. a server with no tools (no `tools` capability)
                raise ToolUnavailable(f"{self.name} refused to list its tools: {error.message}") from None
            except ValidationError as error:
                raise ToolUnavailable(
                    f"{self.name} answered tools/list with something not MCP: {error.error_count()} errors"
                ) from None
            listing.store(tools, ttl_ms, generation)
            self._listed += 1
        if listing.duplicates:
            log.warning("mcp_upstream_duplicate_tools", upstream=self.name, tools=sorted(listing.duplicates))
        return listing

    async def _list_all(self, client: Client) -> tuple[list[types.Tool], int | None]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        ttl_ms: int | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            if client.protocol_version != "2025-11-25":
                ttl_ms = page.ttl_ms if ttl_ms is None else min(ttl_ms, page.ttl_ms)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools, ttl_ms

    async def _call_once(self, tool_name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        progress = PROGRESS.get()
        direct = self.direct if progress is None and tool_name not in self.listing.with_headers else None

        async def send(client: Client) -> types.CallToolResult:
            if direct is not None and client.protocol_version == ERA:
                result = await direct.call(tool_name, arguments)
                if not result.is_error:  # against the tool's outputSchema, as the SDK's client checks
                    await client.session.validate_tool_result(tool_name, result)
                return result
            return await client.call_tool(tool_name, arguments, progress_callback=progress)

        try:
            return await self._request(tool_name, send)
        except (MCPError, Refused) as error:  # the upstream refused the call (bad arguments...): a tool error
            return tool_error(f"{self.namespaced(tool_name)}: {error.message}")
        except ValidationError as error:
            return tool_error(
                f"{self.namespaced(tool_name)} answered something not MCP: {error.error_count()} errors"
            )
        except RuntimeError as error:  # the SDK's client refused the result: not its output schema's
            return tool_error(
                f"{self.namespaced(tool_name)}: {(str(error).splitlines() or [type(error).__name__])[0]}"
            )

    async def _request(self, tool: str, send: Callable[[Client], Awaitable[T]]) -> T:
        """One request under the breaker and `timeout_s`; `Outage` when the upstream failed."""
        started = time.perf_counter()
        outcome = "outage"
        try:
            async with self.breaker:
                session = self._session()
                client = await session.ready()
                session.in_flight += 1
                try:
                    async with asyncio.timeout(self.config.timeout_s):
                        result = await send(client)
                except TimeoutError:
                    outcome = "timeout"
                    raise Outage(f"no answer within {self.config.timeout_s:g} s") from None
                except DirectFailure as failure:
                    raise Outage(str(failure)) from None
                except Refused:
                    outcome = "refused"
                    raise
                except MCPError as error:
                    if error.code == CONNECTION_CLOSED:
                        session.lose(error.message)  # unless the stdio reader said why first
                        raise Outage(f"connection lost ({session.ended_because})") from None
                    if self.config.url is not None and _session_gone(error):
                        session.lose(error.message)
                        raise SessionGone(f"the server forgot the session ({error.message})") from None
                    outcome = "refused"
                    raise
                except RuntimeError:
                    if session.ended_because is None:  # e.g. a result its output schema refuses
                        outcome = "refused"
                        raise
                    raise Outage(f"connection lost ({session.ended_because})") from None
                finally:
                    session.in_flight -= 1
                    session.last_used_at = time.monotonic()
            outcome = "error" if isinstance(result, types.CallToolResult) and result.is_error else "ok"
            return result
        except BreakerOpen:
            outcome = "breaker_open"
            raise
        finally:
            REQUESTS.labels(self.name, tool, outcome).inc()
            REQUEST_SECONDS.labels(self.name, tool).observe(time.perf_counter() - started)

    def _tools_changed(self) -> None:
        self.listing.invalidate()
        self.on_list_changed()

    def _session(self) -> Session:
        """The open session, or a new one starting (no await: two callers never start two)."""
        session = self.session
        if session is None or session.ended_because is not None:
            if session is not None:  # ending on its own; `close` waits for those not yet ended
                self._ended = {ended for ended in self._ended if not ended.finished()} | {session}
            session = self.session = Session(self.config, self._tools_changed)
            session.start()
            self.listing.expire()  # a new process may be a new version: its tools are listed anew
        return session

    def retire(self, reason: str, successor: Upstream | None) -> None:
        """Take no new calls: they go to `successor`, or are refused saying `reason`."""
        self.successor = successor
        self._retired = reason

    async def close(
        self, *, drain_s: float = 0.0, reason: str = "was removed from the configuration"
    ) -> None:
        """Take no new calls, wait up to `drain_s` for those in flight, then end every session."""
        self._retired = reason
        if drain_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self._drained.wait()
        sessions = [*self._ended, *([self.session] if self.session else [])]
        self.session = None
        self._ended.clear()
        await asyncio.gather(*(session.close() for session in sessions))
        if self.direct is not None:
            await self.direct.close()

    def status(self) -> dict[str, Any]:
        """What an operator wants to see of it."""
        session = self.session
        return {
            "name": self.name,
            "transport": self.config.transport,
            "breaker": self.breaker.state.name.lower(),
            "session": "open" if session and session.client and session.ended_because is None else "closed",
            "pid": self.pid,
            "tools": len(self.listing.tools),
        }


class Upstreams:
    """Every enabled upstream of the configuration; `apply` moves to a new one: new upstreams are
    added, removed or disabled ones closed, changed ones replaced while calls in flight on the old
    one finish there. Use as ``async with Upstreams(config) as upstreams:``."""

    def __init__(
        self, config: GatewayConfig | None = None, on_list_changed: Callable[[], None] = lambda: None
    ) -> None:
        self.on_list_changed = on_list_changed
        """Given to each upstream: called when one says its tools changed."""
        self.config = GatewayConfig()
        self._upstreams: dict[str, Upstream] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._initial = config

    async def __aenter__(self) -> Upstreams:
        if self._initial is not None:
            await self.apply(self._initial)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        upstreams = list(self._upstreams.values())
        self._upstreams.clear()
        await asyncio.gather(*(upstream.close(reason="is shutting down") for upstream in upstreams))
        await asyncio.gather(*self._closing)

    def providers(self) -> list[Upstream]:
        return list(self._upstreams.values())

    def get(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    async def apply(self, config: GatewayConfig) -> None:
        wanted = config.enabled()
        current = self._upstreams
        for name, upstream in current.items():
            if name not in wanted:
                self._retire(upstream, None)
        kept: dict[str, Upstream] = {}
        for name, upstream_config in wanted.items():
            old = current.get(name)
            if old is not None and old.config == upstream_config:
                kept[name] = old
                continue
            kept[name] = Upstream(upstream_config, self.on_list_changed)
            if old is not None:
                self._retire(old, kept[name])
        self._upstreams = kept
        self.config = config
        log.info("mcp_upstreams_applied", upstreams=list(kept), source=config.source)

    def _retire(self, upstream: Upstream, successor: Upstream | None) -> None:
        """From now on `upstream` takes no new call (they go to `successor`, or are refused); it is
        closed in the background once its calls in flight are done (or timed out)."""
        reason = "was replaced" if successor else "was removed from the configuration"
        upstream.retire(reason, successor)
        drain_s = upstream.config.timeout_s * upstream.config.attempts + 1
        task = asyncio.create_task(
            upstream.close(drain_s=drain_s, reason=reason), name=f"retire-{upstream.name}"
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def collisions(self, reserved: Iterable[tuple[str, str]] = ()) -> dict[str, list[str]]:
        """Tool names claimed more than once, with who claims them: `reserved` (owner, name) pairs
        (e.g. Sophia's own tools) and the upstreams' last listings, each of which may also list a
        name twice."""
        claims: dict[str, list[str]] = {}
        for owner, name in reserved:
            claims.setdefault(name, []).append(owner)
        for upstream in self._upstreams.values():
            for tool_name in upstream.listing.tools:
                claims.setdefault(upstream.namespaced(tool_name), []).append(upstream.name)
            for tool_name in upstream.listing.duplicates:
                claims.setdefault(upstream.namespaced(tool_name), []).append(upstream.name)
        return {name: owners for name, owners in claims.items() if len(owners) > 1}
