"""An audit entry for every tool call (who, which tool, how long, the outcome, and the names of the
arguments: never their values, which may be secrets). Calls are many and each entry is small, so
entries wait in memory and go to PostgreSQL's outbox in one statement every `FLUSH_S` (or sooner
at `BATCH`), from where the audit sink chains them into the trail like any other entry. Closing
flushes what waits. While PostgreSQL is away entries are kept, up to `MAX_WAITING`; past that the
oldest are dropped and counted (`sophia_mcp_audit_dropped_total`): a tool call is not refused
for want of its audit entry."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import UTC, datetime

from prometheus_client import Counter

from sophia.core.documents import printable
from sophia.core.errors import Invalid, Unavailable
from sophia.database import Database, outbox
from sophia.mcp_gateway.providers import Caller
from sophia.shared.logging import get_logger

log = get_logger(__name__)

FLUSH_S = 0.2
BATCH = 500
MAX_WAITING = 100_000
MAX_NAMES = 50
MAX_NAME = 100
"""An entry names at most this many arguments, each cut past this many characters, NUL and lone
surrogates escaped: the names are the client's text, and PostgreSQL's jsonb refuses a NUL."""
AUDIT_DROPPED = Counter(
    "sophia_mcp_audit_dropped_total",
    "Tool-call audit entries dropped: PostgreSQL away past the queue's room, or refusing an entry",
)
ACTION = "mcp.tool_called"


class AuditTrail:
    def __init__(self, database: Database, flush_s: float | None = None) -> None:
        """`flush_s` None: `FLUSH_S`, read now (the gateway makes its trail with the default)."""
        self.database = database
        self.flush_s = FLUSH_S if flush_s is None else flush_s
        self._waiting: deque[outbox.AuditEntry] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AuditTrail:
        self._task = asyncio.create_task(self._run(), name="mcp-audit")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Unavailable, OSError):
            await self.flush()

    def record(
        self, caller: Caller, tool: str, arguments: list[str], outcome: str, duration_s: float
    ) -> None:
        named = [printable(name)[:MAX_NAME] for name in arguments[:MAX_NAMES]]  # the client's text
        if len(arguments) > MAX_NAMES:
            named.append(f"… [{len(arguments) - MAX_NAMES} more]")
        details: dict[str, object] = {
            "tool": tool,
            "outcome": outcome,
            "duration_ms": round(duration_s * 1000, 3),
            "arguments": named,
            "scope": caller.scope,
        }
        if len(self._waiting) >= MAX_WAITING:
            self._waiting.popleft()
            AUDIT_DROPPED.inc()
        self._waiting.append(
            (printable(caller.actor), ACTION, f"mcp/tool/{tool}", details, datetime.now(UTC))
        )
        if len(self._waiting) >= BATCH:
            self._wake.set()

    async def flush(self) -> int:
        """Write what waits (in batches of `BATCH`); how many were written. A batch PostgreSQL
        refuses as invalid is written again entry by entry, and only the entries it refuses are
        dropped (logged and counted): one bad entry costs no other caller's."""
        written = 0
        while self._waiting:
            batch = [self._waiting[index] for index in range(min(BATCH, len(self._waiting)))]
            try:
                written += await self._write(batch)
            except Invalid:
                for entry in batch:
                    try:
                        written += await self._write([entry])
                    except Invalid as refused:  # a value PostgreSQL will never take: not retried
                        log.error("mcp_audit_refused", tool=printable(entry[2]), reason=refused.detail)
                        AUDIT_DROPPED.inc()
            for _ in batch:
                self._waiting.popleft()
        return written

    async def _write(self, entries: list[outbox.AuditEntry]) -> int:
        async with self.database.connection() as connection:
            await outbox.audit_many(connection, entries)
        return len(entries)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            try:
                await self.flush()
            except (Unavailable, OSError) as away:
                log.warning("mcp_audit_waiting", waiting=len(self._waiting), reason=str(away))
