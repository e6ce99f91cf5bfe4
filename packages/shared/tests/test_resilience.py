import asyncio
import random

import pytest

from sophia.shared import resilience
from sophia.shared.resilience import (
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    backoff_delays,
    honour_cancellation,
    retry,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        "test", failure_rate=0.5, window=4, min_calls=4, open_s=10, failure_types=(OSError,), clock=clock
    )


async def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(OSError, match="down"):
        async with breaker:
            raise OSError("down")


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def test_breaker_opens_when_failure_rate_reaches_the_threshold():
    breaker = make_breaker(Clock())
    await succeed(breaker)
    await succeed(breaker)
    await fail(breaker)
    assert breaker.state is BreakerState.CLOSED  # 3 calls < min_calls
    await fail(breaker)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as caught:
        await succeed(breaker)
    assert caught.value.retry_after_s == 10


async def test_an_open_breaker_never_says_retry_after_0_seconds():
    breaker = CircuitBreaker(
        "test", failure_rate=0.5, window=2, min_calls=2, open_s=0.2, failure_types=(OSError,)
    )
    await fail(breaker)
    await fail(breaker)
    with pytest.raises(BreakerOpen) as caught:
        await succeed(breaker)
    assert caught.value.retry_after_s == 1  # Retry-After is whole seconds: 0 would say "hammer me"


async def test_errors_that_are_not_dependency_failures_do_not_count():
    breaker = make_breaker(Clock())
    for _ in range(6):
        with pytest.raises(KeyError):
            async with breaker:
                raise KeyError("a 404 is not an outage")
    assert breaker.state is BreakerState.CLOSED


def saturating_breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        "test",
        failure_rate=0.5,
        window=4,
        min_calls=4,
        open_s=10,
        failure_types=(OSError,),
        saturation_types=(TimeoutError,),  # an OSError, yet "busy", not "down"
        clock=clock,
    )


async def time_out(breaker: CircuitBreaker) -> None:
    with pytest.raises(TimeoutError):
        async with breaker:
            raise TimeoutError("every pooled connection busy")


async def test_saturation_never_opens_the_breaker_and_counts_for_neither_side():
    breaker = saturating_breaker(Clock())
    for _ in range(10):
        await time_out(breaker)
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker)
    await fail(breaker)
    await succeed(breaker)
    await time_out(breaker)  # not counted: 3 calls so far, under min_calls
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker)
    assert breaker.state is BreakerState.OPEN  # 3 failures of 4 counted calls


async def open_until_due(breaker: CircuitBreaker, clock: Clock) -> None:
    """Open `breaker` (four failures), then move past its open period: the next call probes."""
    for _ in range(4):
        await fail(breaker)
    clock.now = 10.5


async def test_a_probe_that_meets_saturation_leaves_the_next_call_to_probe():
    clock = Clock()
    breaker = saturating_breaker(clock)
    await open_until_due(breaker, clock)
    await time_out(breaker)  # the probe learnt nothing
    assert breaker.state is BreakerState.HALF_OPEN
    await succeed(breaker)  # the next call may probe, and closes it
    assert breaker.state is BreakerState.CLOSED


async def test_open_breaker_lets_one_probe_through_after_open_s_and_closes_on_success():
    clock = Clock()
    breaker = make_breaker(clock)
    await open_until_due(breaker, clock)
    breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen):
        breaker.allow()  # only one probe at a time
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


async def test_failed_probe_opens_the_breaker_again():
    clock = Clock()
    breaker = make_breaker(clock)
    for _ in range(4):
        await fail(breaker)
    clock.now = 11
    await fail(breaker)
    assert breaker.state is BreakerState.OPEN
    clock.now = 15
    with pytest.raises(BreakerOpen):
        breaker.allow()


def test_backoff_is_exponential_with_full_jitter_and_capped():
    delays = backoff_delays(8, base_s=0.1, max_s=1.0, rng=random.Random(1))
    assert len(delays) == 7
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(1.0, 0.1 * 2**attempt)
    assert len(set(delays)) == 7  # jittered, not a fixed schedule


async def test_retry_retries_transient_failures_then_returns():
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")
        return "ok"

    assert await retry(flaky, attempts=3, base_s=0.001) == "ok"
    assert len(calls) == 3


async def test_retry_gives_up_after_its_attempts_and_never_retries_other_errors():
    calls = []

    async def always_down() -> None:
        calls.append(1)
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await retry(always_down, attempts=2, base_s=0.001)
    assert len(calls) == 2

    async def wrong() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry(wrong, attempts=5, base_s=0.001)
    assert len(calls) == 3


async def test_failures_landing_after_the_breaker_opened_keep_it_open_longer_without_a_new_transition(
    logs_of,
):
    clock = Clock()
    breaker = make_breaker(clock)
    logged = logs_of(resilience)
    for _ in range(4):
        breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    clock.now = 8  # calls started before it opened fail now, as many as trip it
    for _ in range(4):
        breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    assert [entry["state"] for entry in logged.events("breaker_state")] == ["open"]
    clock.now = 12  # past the first opening's 10 s, within the second's
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.now = 18
    breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


async def test_a_loop_whose_cancellation_was_swallowed_stops_at_its_next_turn():
    turns, waiting = 0, asyncio.Event()

    async def consumer_loop() -> None:
        nonlocal turns
        while True:
            honour_cancellation()
            turns += 1
            try:  # what Python 3.11's wait_for does when the cancel and the result meet
                waiting.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(consumer_loop())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert turns == 1


async def test_a_task_never_cancelled_or_no_task_at_all_goes_on():
    async def turn() -> str:
        honour_cancellation()
        return "went on"

    assert await asyncio.create_task(turn()) == "went on"
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def callback() -> None:  # a loop callback runs outside any task
        honour_cancellation()
        outcome.set_result("went on")

    asyncio.get_running_loop().call_soon(callback)
    assert await outcome == "went on"
