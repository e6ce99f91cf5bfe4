"""Dynamic batching: single inputs from many callers run through a model together.

A model call costs much less per input in a batch than one by one (one matrix product instead of
sixty-four), so the batcher queues each caller's inputs and runs them in batches of at most
`max_batch`, waiting at most `max_wait_s` after the first queued input for a batch to fill. The
queue is bounded (`max_queue` inputs): when it is full a caller gets `Unavailable` (a 503 with
Retry-After) at once instead of a queue that grows until every request times out. It is bounded
in time too: inputs that, at the pace the model has kept (`wait_s`), would not be done before
their caller's deadline are refused the same way rather than queued only to expire. Inputs whose
deadline passes while queued anyway are dropped before they cost a model call, and a model call
that checks `wanted(done)` between its steps stops (`Abandoned`) once nobody waits for its answers,
or once, at the pace its first steps kept, it would end after every waiting caller's deadline: a
batch of long inputs admitted on an idle machine (no pace known yet) can take many times its
callers' deadline on a busy one, and every second of it past the deadline was computed for nobody.
The model runs in one worker thread (inference releases the GIL), so the event loop keeps
answering while a batch computes. CPU-bound steps run in that thread too (`in_model_thread`), under
the same bound and the same deadlines: a step waiting for the thread is one more entry queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from sophia.core.errors import Unavailable
from sophia.ml.priority import lower_this_thread

In = TypeVar("In")
Out = TypeVar("Out")
R = TypeVar("R")

BATCH_SIZE = Histogram(
    "sophia_ml_batch_size", "Inputs per model call", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_DEPTH = Gauge("sophia_ml_queue_depth", "Inputs waiting for a model call", ["model"])
ABANDONED = Counter(
    "sophia_ml_abandoned_inputs_total",
    "Inputs of a model call stopped part-way because nobody waited for them any more",
    ["model"],
)
BATCH_SECONDS = Histogram(
    "sophia_ml_batch_seconds",
    "Time of one model call",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class DeadlineExceeded(Unavailable):
    """The caller's deadline passed before its inputs reached the model."""


class Abandoned(Exception):
    """Raised by a model call that found, between two of its steps, that nobody waits for its
    answers any more (`Batcher.wanted`); `done` inputs were computed before it stopped."""

    def __init__(self, done: int) -> None:
        super().__init__(f"stopped after {done} inputs: nobody waits for the rest")
        self.done = done


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    deadline: float
    future: asyncio.Future[Out] = field(repr=False)


@dataclass(slots=True)
class Reservation:
    """Room in a batcher's backlog held for one request's inputs (`Batcher.reserve`): `left` of
    them not queued yet."""

    left: int


PACE_TRUSTED_S = 60.0
"""How long the model's measured pace is trusted to refuse work on an idle model."""
PACE_MARGIN = 0.8
"""Work is taken only if the pace says it is done within this share of its deadline: the pace is
an average, and inputs done just past their deadline are all wasted (their caller got a 503)."""


class Batcher(Generic[In, Out]):
    """`async with Batcher(run, name="embed") as batcher: await batcher.submit(texts, timeout_s=1)`.

    `run(items) -> outputs` is the model call: synchronous, same length and order as `items`. The
    model's thread runs `nice` steps below the event loop (`sophia.ml.priority`)."""

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        *,
        name: str,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        max_queue: int = 2048,
        nice: int = 0,
    ) -> None:
        if min(max_batch, max_queue) < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_s >= 0")
        self.run, self.name = run, name
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._queue: deque[_Pending[In, Out]] = deque()
        self._steps = 0  # steps handed to the thread whose callers still wait for them
        self._reserved = 0  # inputs admitted with their request (`reserve`) and not queued yet
        self._input_s = 0.0  # the model's pace: seconds per input, a moving average (0: none run yet)
        self._paced_at = -math.inf  # when a batch last measured it
        self._running: tuple[float, list[_Pending[In, Out]]] | None = None  # the batch in the thread
        """(when it started, its inputs); read by `wanted` from the thread."""
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"ml-{name}", initializer=lower_this_thread, initargs=(nice,)
        )
        self._loop_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Batcher[In, Out]:
        self._loop_task = asyncio.create_task(self._serve(), name=f"batcher-{self.name}")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Finish what is queued (drain), then stop the thread."""
        assert self._loop_task is not None, "exited without having been entered"
        self._closing = True
        self._arrived.set()
        await self._loop_task
        self._executor.shutdown(wait=True)

    async def submit(
        self, items: Sequence[In], *, timeout_s: float, reservation: Reservation | None = None
    ) -> list[Out]:
        """The model's outputs for `items`, in order; `Unavailable` if the queue is full,
        `DeadlineExceeded` if `timeout_s` passes first. Items of a `reservation` were admitted with
        the rest of their request and are not refused on their own part-way through it."""
        if reservation is None:
            self.admit(len(items), timeout_s)
        else:
            self._release(reservation, len(items))  # queued now: held by the queue itself
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        pending = [_Pending(item, deadline, loop.create_future()) for item in items]
        self._queue.extend(pending)
        QUEUE_DEPTH.labels(self.name).set(len(self._queue))
        self._arrived.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        try:
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*(p.future for p in pending)))
        except TimeoutError:
            raise DeadlineExceeded(f"The {self.name} model did not answer within {timeout_s} s.", 1) from None
        finally:
            for waiting in pending:
                waiting.future.cancel()  # still queued: skipped when its turn comes

    async def in_model_thread(self, step: Callable[..., R], *args: Any, timeout_s: float | None = None) -> R:
        """`step(*args)` run beside the model calls, in the model's thread, never on the event loop
        (tokenizing 256 inputs of 20,000 characters took the loop for tens of ms).

        A step waits for the same thread as the queued inputs and delays their batches as much as
        one of them, so it counts as one entry in the same bound (`max_queue`, shared with `submit`):
        `Unavailable` at once when the backlog is full. `DeadlineExceeded` if `timeout_s` passes
        first; a step that has not started by then never runs. Without `timeout_s`, no deadline."""
        self._check_room(1)
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        timer = asyncio.timeout(timeout_s)
        self._steps += 1
        try:
            async with timer:  # leaving it cancels a step still waiting: the thread skips it
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._start, deadline, step, args
                )
        except TimeoutError:
            if not timer.expired():
                raise  # the step's own error
            raise DeadlineExceeded(
                f"The {self.name} model's thread did not finish the step within {timeout_s} s.", 1
            ) from None
        finally:
            self._steps -= 1

    def _start(self, deadline: float, step: Callable[..., R], args: tuple[Any, ...]) -> R:
        """In the thread: the step, unless its deadline passed while it waited (the caller's timer
        may not have fired yet, if the event loop is busy)."""
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"Queued past its deadline ({self.name}).", 1)
        return step(*args)

    def wanted(self, done: int = 0) -> bool:
        """Whether anyone still waits for the batch running now, and, with `done` of its inputs
        computed, would still get the answer in time at the pace this batch keeps (at
        `PACE_MARGIN` of it: a slow first step does not stop what could make it). Called by the
        model, in its thread, between steps of a long call, which raises `Abandoned` when it is
        not: a caller past its deadline, or gone, has been answered 503 already, and one whose
        deadline passes before the batch ends gets its 503 now instead of at its deadline, with
        nothing more computed for it. (A maximum-size request admitted on an idle model whose
        pace was not known took both cores for its whole deadline: bench/hostile.py.)"""
        running, now = self._running, time.monotonic()
        if running is None:
            return False
        started, batch = running
        finish = now
        if 0 < done < len(batch):
            finish += (len(batch) - done) * (now - started) / done * PACE_MARGIN
        return any(not pending.future.done() and pending.deadline > finish for pending in batch)

    @property
    def room(self) -> int:
        """How many more entries (inputs and steps) the backlog takes now."""
        return self.max_queue - self._backlog()

    def wait_s(self, count: int = 0) -> float:
        """About how long until `count` more inputs would be done, behind the backlog, at the pace
        the model has kept so far (0 before its first batch starts)."""
        return (self._backlog() + count) * self._pace()

    def _pace(self) -> float:
        """Seconds an input: the average kept, or more if the batch running now has already taken
        longer an input. Without that bound, nothing would be refused while the first batch runs
        (no pace yet): every maximum-size request was admitted behind it, for a 503 each."""
        if self._running is None:
            return self._input_s
        started, batch = self._running
        return max(self._input_s, (time.monotonic() - started) / len(batch))

    def would_expire(self, count: int, timeout_s: float) -> bool:
        """Whether `count` more inputs would not be done within `timeout_s`, behind what is queued,
        at the model's pace. An idle model whose pace was last measured more than
        `PACE_TRUSTED_S` ago takes them anyway: a pace measured badly once must not refuse every
        request for ever (only a run measures it again)."""
        idle = self._backlog() == 0 and self._running is None
        if idle and time.monotonic() - self._paced_at > PACE_TRUSTED_S:
            return False
        return self.wait_s(count) > timeout_s * PACE_MARGIN

    @contextlib.contextmanager
    def reserve(self, count: int, timeout_s: float) -> Iterator[Reservation]:
        """Room for `count` inputs of one request, admitted together (`admit`) and held while the
        block runs: its inputs, submitted separately with the reservation, are not refused part-way
        through it, nor is anyone else admitted into their room. What the block did not submit is
        given back at its end. A request refused part-way would leave its queued inputs computed
        for an answer nobody reads."""
        if count:
            self.admit(count, timeout_s)
        reservation = Reservation(count)
        self._reserved += count
        try:
            yield reservation
        finally:
            self._release(reservation, reservation.left)

    def _release(self, reservation: Reservation, count: int) -> None:
        taken = min(count, reservation.left)
        reservation.left -= taken
        self._reserved -= taken

    def admit(self, count: int, timeout_s: float) -> None:
        """`Unavailable` at once unless `count` more inputs fit in the backlog and, at the model's
        pace, would be done within `timeout_s`."""
        self._check_room(count)
        if self.would_expire(count, timeout_s):  # queued, they would only expire: refuse now
            raise Unavailable(
                f"The {self.name} model is busy: {_inputs(count)} would be done in about "
                f"{self.wait_s(count):.1f} s, too close to this request's {timeout_s:g} s "
                "limit (send fewer inputs, or retry later).",
                1,
            )

    def _backlog(self) -> int:
        return len(self._queue) + self._steps + self._reserved

    def _check_room(self, count: int) -> None:
        """`Unavailable` at once unless `count` more entries fit in the backlog (inputs and steps)."""
        backlog = self._backlog()
        if count > self.max_queue:
            raise Unavailable(
                f"The {self.name} model queues at most {self.max_queue} inputs; "
                f"this request has {count} (send fewer at a time).",
                1,
            )
        if backlog + count > self.max_queue:
            raise Unavailable(f"The {self.name} model is busy ({backlog} inputs and steps queued).", 1)

    async def _serve(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            if len(self._queue) < self.max_batch and not self._closing:
                with contextlib.suppress(TimeoutError):  # let the batch fill, at most max_wait_s
                    async with asyncio.timeout(self.max_wait_s):
                        await self._full.wait()
            self._full.clear()
            batch = self._take()
            QUEUE_DEPTH.labels(self.name).set(len(self._queue))
            if batch:
                await self._run(batch)

    def _take(self) -> list[_Pending[In, Out]]:
        now, batch = time.monotonic(), list[_Pending[In, Out]]()
        while self._queue and len(batch) < self.max_batch:
            pending = self._queue.popleft()
            if pending.future.done():
                continue  # its caller gave up
            if pending.deadline <= now:
                pending.future.set_exception(DeadlineExceeded(f"Queued past its deadline ({self.name}).", 1))
                continue
            batch.append(pending)
        return batch

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        BATCH_SIZE.labels(self.name).observe(len(batch))
        started = time.perf_counter()
        self._running = (time.monotonic(), batch)
        loop = asyncio.get_running_loop()
        done: int | None = len(batch)  # inputs computed, for the pace (None: the model failed)
        try:
            outputs = await loop.run_in_executor(self._executor, self.run, [p.item for p in batch])
        except Abandoned as stopped:  # its callers all gave up: they were answered already
            done = stopped.done
            ABANDONED.labels(self.name).inc(len(batch) - done)
            self._fail(batch, DeadlineExceeded(f"Queued past its deadline ({self.name}).", 1))
            return
        except Exception as error:  # the model failed: every caller of this batch hears it
            done = None
            self._fail(batch, error)
            return
        finally:
            self._running = None
            elapsed = time.perf_counter() - started
            BATCH_SECONDS.labels(self.name).observe(elapsed)
            if done is not None:  # a call stopped before its first input: one input took all of it
                self._measure(elapsed / max(done, 1))
        for pending, output in zip(batch, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(output)

    def _measure(self, per_input: float) -> None:
        """Fold one call's seconds per input into the model's pace."""
        self._input_s = per_input if not self._input_s else 0.8 * self._input_s + 0.2 * per_input
        self._paced_at = time.monotonic()

    @staticmethod
    def _fail(batch: list[_Pending[In, Out]], error: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)


def _inputs(count: int) -> str:
    return "this input" if count == 1 else f"these {count} inputs"
