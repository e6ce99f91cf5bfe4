"""The one home of timeouts, retries and circuit breakers for every call to another process, and of
the cancellation check the loops that make those calls need."""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from prometheus_client import Gauge

from sophia.core.errors import Unavailable
from sophia.shared.logging import get_logger

T = TypeVar("T")

log = get_logger(__name__)

BREAKER_STATE = Gauge(
    "sophia_breaker_state",
    "Circuit breaker state (0 closed, 1 half-open, 2 open); the worst worker's",
    ["dependency"],
    multiprocess_mode="livemax",
)


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerOpen(Unavailable):
    """Raised instead of calling a dependency whose breaker is open."""


class CircuitBreaker:
    """Failure-rate breaker over a sliding window of calls: closed, open, half-open.

    Use as ``async with breaker:`` around one call; exceptions of `failure_types` count as
    failures, except those of `saturation_types` (our own pool or a statement's time limit: the
    dependency is up, only busy), and anything else (a 404, a validation error) as success. A
    breaker opens for outages, never for load.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 5,
        open_s: float = 5.0,
        failure_types: tuple[type[BaseException], ...] = (Exception,),
        saturation_types: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.open_s = open_s
        self.failure_types = failure_types
        self.saturation_types = saturation_types
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED
        BREAKER_STATE.labels(name).set(0)

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            log.warning("breaker_state", dependency=self.name, state=state.name.lower())
        self.state = state
        BREAKER_STATE.labels(self.name).set(int(state))

    def allow(self) -> None:
        """Raise `BreakerOpen` unless a call may go ahead now."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.open_s:
                raise BreakerOpen(f"{self.name} is unavailable", retry_after_s=max(1, math.ceil(self.open_s)))
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                raise BreakerOpen(f"{self.name} is recovering", retry_after_s=1)
            self._probing = True

    def record(self, ok: bool) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            self._outcomes.clear()
            if ok:
                self._move(BreakerState.CLOSED)
            else:
                self._trip()
            return
        self._outcomes.append(ok)
        failures = self._outcomes.count(False)
        calls = len(self._outcomes)
        if calls >= self.min_calls and failures / calls >= self.failure_rate:
            self._trip()

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._outcomes.clear()
        self._move(BreakerState.OPEN)

    async def __aenter__(self) -> CircuitBreaker:
        self.allow()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, self.saturation_types):
            self._probing = False  # no verdict either way: a half-open breaker lets the next call probe
            return
        failed = exc is not None and isinstance(exc, self.failure_types)
        self.record(not failed)


def backoff_delays(
    attempts: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> list[float]:
    """Exponential backoff with full jitter: a uniform draw in [0, min(max, base * 2^n)]."""
    draw = (rng or random).uniform
    return [draw(0, min(max_s, base_s * 2**n)) for n in range(attempts - 1)]


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    base_s: float = 0.05,
    max_s: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = (OSError, TimeoutError),
    name: str = "call",
) -> T:
    """Run an idempotent `call`, retrying `retry_on` failures with backoff and jitter."""
    delays = backoff_delays(attempts, base_s, max_s)
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            return await call()
        except retry_on as error:
            if delay is None:
                raise
            log.info("retrying", call=name, attempt=attempt, delay_s=round(delay, 3), error=repr(error))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def honour_cancellation() -> None:
    """Raise `CancelledError` in a task that was cancelled but carried on.

    Python 3.11's `asyncio.wait_for` drops a cancellation that arrives as the awaited thing
    completes (fixed in 3.12), and nats-py waits for every message with it: a consumer loop
    cancelled at that moment would fetch on for good. `Task.cancelling()` still counts the
    request, so a loop that calls this once a turn stops at its next one."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
