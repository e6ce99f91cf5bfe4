"""Readiness at a bounded cost: the verdict is reused for a while, and one probe runs at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `/readyz` answers: whether the process is ready, and the report that says why."""

    ready: bool
    report: dict[str, Any]


class Readiness:
    """`await readiness.verdict(probe)`: the last verdict while younger than `reuse_s`, else a new
    probe's, shared by every caller who asks meanwhile. A flood of probes reaches the engines at
    most once per `reuse_s`, whatever its rate."""

    def __init__(self, reuse_s: float) -> None:
        self.reuse_s = reuse_s
        self._last: tuple[float, Verdict] | None = None
        self._probing: asyncio.Future[Verdict] | None = None

    async def verdict(self, probe: Callable[[], Awaitable[Verdict]]) -> Verdict:
        if self._last is not None and time.monotonic() - self._last[0] < self.reuse_s:
            return self._last[1]
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe(probe))
        return await asyncio.shield(self._probing)  # a caller that gives up leaves it to the others

    async def _probe(self, probe: Callable[[], Awaitable[Verdict]]) -> Verdict:
        try:
            verdict = await probe()
            self._last = (time.monotonic(), verdict)
            return verdict
        finally:
            self._probing = None
