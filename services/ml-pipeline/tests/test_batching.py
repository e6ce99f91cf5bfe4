"""Dynamic batching: many callers' inputs run together, bounded in size, wait, queue and time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from metrics import sample
from waiting import eventually

from sophia.core.errors import Unavailable
from sophia.ml.batching import Abandoned, Batcher, DeadlineExceeded


class Model:
    """Doubles numbers, recording each call's batch; `gate` holds a call until set (thread-safe)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.started.set()
        self.gate.wait(5)
        self.batches.append(list(items))
        if -1 in items:
            raise ValueError("the model cannot take -1")
        return [item * 2 for item in items]


async def test_concurrent_callers_share_batches_and_each_gets_its_own_answers_in_order():
    model = Model()
    async with Batcher(model, name="t", max_batch=8, max_wait_s=0.05) as batcher:
        answers = await asyncio.gather(*(batcher.submit([n, n + 100], timeout_s=5) for n in range(10)))
    assert answers == [[2 * n, 2 * (n + 100)] for n in range(10)]
    assert max(len(batch) for batch in model.batches) == 8
    assert len(model.batches) < 10  # shared: fewer model calls than callers


async def test_a_lone_input_waits_at_most_max_wait_and_a_full_batch_not_at_all():
    model = Model()
    async with Batcher(model, name="t", max_batch=4, max_wait_s=30) as batcher:
        assert await batcher.submit(list(range(4)), timeout_s=1) == [0, 2, 4, 6]  # full: runs at once
    async with Batcher(model, name="t", max_batch=64, max_wait_s=0.01) as batcher:
        assert await batcher.submit([5], timeout_s=1) == [10]


async def test_a_full_queue_refuses_at_once_with_unavailable():
    model = Model()
    model.gate.clear()
    async with Batcher(model, name="t", max_batch=2, max_wait_s=0, max_queue=4) as batcher:
        running = asyncio.create_task(batcher.submit([1, 2], timeout_s=5))  # in the model, held
        await asyncio.to_thread(model.started.wait, 5)
        queued = asyncio.create_task(batcher.submit([3, 4, 5, 6], timeout_s=5))  # fills the queue
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="busy") as refused:
            await batcher.submit([7], timeout_s=5)
        assert refused.value.retry_after_s >= 1
        model.gate.set()
        assert await running == [2, 4]
        assert await queued == [6, 8, 10, 12]


async def test_inputs_past_their_deadline_never_reach_the_model():
    model = Model()
    model.gate.clear()
    async with Batcher(model, name="t", max_batch=1, max_wait_s=0) as batcher:
        first = asyncio.create_task(batcher.submit([1], timeout_s=5))
        await asyncio.to_thread(model.started.wait, 5)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([2], timeout_s=0.05)  # queued behind the held call
        model.gate.set()
        assert await first == [2]
        assert await batcher.submit([3], timeout_s=5) == [6]
    assert [2] not in model.batches


async def test_a_model_error_reaches_the_callers_of_that_batch_only():
    model = Model()
    async with Batcher(model, name="t", max_batch=2, max_wait_s=0) as batcher:
        with pytest.raises(ValueError, match="cannot take -1"):
            await batcher.submit([-1], timeout_s=5)
        assert await batcher.submit([4], timeout_s=5) == [8]


async def test_closing_finishes_what_is_queued():
    model = Model()
    batcher = Batcher(model, name="t", max_batch=2, max_wait_s=0.5)
    async with batcher:
        pending = asyncio.create_task(batcher.submit([1], timeout_s=5))
        await asyncio.sleep(0)
    assert await pending == [2]


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Model(), name="t", max_batch=0)


async def test_an_input_already_past_its_deadline_when_its_batch_is_taken_never_reaches_the_model():
    model = Model()
    async with Batcher(model, name="t", max_batch=1, max_wait_s=0) as batcher:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([1], timeout_s=0)
        assert await batcher.submit([2], timeout_s=5) == [4]
    assert model.batches == [[2]]


@pytest.mark.parametrize("first", [1, -1], ids=["answered", "failed"])
async def test_a_batch_whose_callers_gave_up_while_it_ran_leaves_the_batcher_serving(first):
    model = Model()
    model.gate.clear()
    async with Batcher(model, name="t", max_batch=1, max_wait_s=0) as batcher:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([first], timeout_s=0.05)  # gives up while the model holds its input
        model.gate.set()  # the model then answers (or fails) a caller that is gone
        assert await batcher.submit([3], timeout_s=5) == [6]
    assert model.batches == [[first], [3]]


async def test_a_step_run_in_the_model_thread_runs_there_and_leaves_the_loop_free():
    threads: list[str] = []

    def step(value: int) -> int:
        threads.append(threading.current_thread().name)
        return value * 2

    async with Batcher(lambda items: items, name="steps") as batcher:
        assert await batcher.in_model_thread(step, 21) == 42
    assert threads == [threads[0]]
    assert threads[0].startswith("ml-steps")


async def test_steps_waiting_for_the_model_thread_count_in_the_queue_bound_and_a_full_one_refuses_at_once():
    model = Model()
    model.gate.clear()
    async with Batcher(model, name="t", max_batch=1, max_wait_s=0, max_queue=3) as batcher:
        running = asyncio.create_task(batcher.submit([1], timeout_s=5))  # holds the thread
        await asyncio.to_thread(model.started.wait, 5)
        queued = asyncio.create_task(batcher.submit([2], timeout_s=5))
        steps = [asyncio.create_task(batcher.in_model_thread(abs, -n, timeout_s=5)) for n in (3, 4)]
        await asyncio.sleep(0)  # each caller has taken its place
        with pytest.raises(Unavailable, match="busy") as refused:
            await batcher.in_model_thread(abs, -5, timeout_s=5)
        assert refused.value.retry_after_s >= 1
        with pytest.raises(Unavailable, match="busy"):
            await batcher.submit([6], timeout_s=5)  # the steps hold places an input would take
        model.gate.set()
        assert [await running, await queued, *[await step for step in steps]] == [[2], [4], 3, 4]
        assert await batcher.in_model_thread(abs, -7, timeout_s=5) == 7  # places given back


async def test_a_step_that_cannot_start_before_its_deadline_fails_and_never_runs():
    model = Model()
    model.gate.clear()
    ran: list[int] = []
    async with Batcher(model, name="t", max_batch=1, max_wait_s=0, max_queue=1) as batcher:
        running = asyncio.create_task(batcher.submit([1], timeout_s=5))
        await asyncio.to_thread(model.started.wait, 5)
        with pytest.raises(DeadlineExceeded):
            await batcher.in_model_thread(ran.append, 2, timeout_s=0.05)  # waits behind the held call
        model.gate.set()
        assert await running == [2]
        with pytest.raises(DeadlineExceeded):
            await batcher.in_model_thread(ran.append, 3, timeout_s=0)  # past its deadline already
        await batcher.in_model_thread(ran.append, 4, timeout_s=5)  # after both, in the one thread
    assert ran == [4]


async def test_inputs_that_would_not_be_done_by_their_deadline_at_the_models_pace_are_refused_at_once(
    monkeypatch,
):
    import time

    from sophia.ml import batching

    ran: list[list[str]] = []

    def slow(items: list[str]) -> list[str]:
        time.sleep(0.05 * len(items) if not ran else 0.001)  # 50 ms an input the first time
        ran.append(items)
        return items

    async with Batcher(slow, name="paced", max_batch=4, max_wait_s=0) as batcher:
        assert batcher.wait_s(100) == 0  # no pace known before the first batch
        assert await batcher.submit(["a", "b"], timeout_s=5) == ["a", "b"]
        assert batcher.wait_s(10) == pytest.approx(0.5, rel=0.5)
        too_close = r"these 10 inputs would be done in about .* s, too close to this request's 0.1 s"
        with pytest.raises(Unavailable, match=too_close):
            await batcher.submit([f"late {n}" for n in range(10)], timeout_s=0.1)
        # a pace no run has measured for a while does not refuse an idle model: it runs, and is
        # measured again
        monkeypatch.setattr(batching, "PACE_TRUSTED_S", 0.0)
        assert await batcher.submit(["c", "d", "e", "f"], timeout_s=0.15) == ["c", "d", "e", "f"]
    assert ran == [["a", "b"], ["c", "d", "e", "f"]]  # never the refused ones


async def test_a_request_is_admitted_whole_or_refused_before_any_of_it_is_queued():
    model = Model()
    async with Batcher(model, name="whole", max_batch=2, max_wait_s=0, max_queue=3) as batcher:
        with (
            pytest.raises(Unavailable, match="queues at most 3 inputs; this request has 4"),
            batcher.reserve(4, 1),
        ):
            pass
        with batcher.reserve(3, timeout_s=1) as reservation:
            assert batcher.room == 0  # held for this request: nobody else is admitted into it
            with pytest.raises(Unavailable, match="busy"):
                await batcher.submit([9], timeout_s=1)
            answers = await asyncio.gather(
                *(batcher.submit([n], timeout_s=1, reservation=reservation) for n in range(2))
            )
        assert batcher.room == 3  # the input it did not submit is given back
    assert answers == [[0], [2]]
    assert sorted(item for batch in model.batches for item in batch) == [0, 1]


async def test_while_the_first_batch_runs_its_time_so_far_bounds_the_pace():
    """No batch has finished, so no pace is known; the one running has taken 0.025 s an input so
    far, so ten inputs due in 0.2 s are refused rather than queued behind it."""
    model = Model()
    model.gate.clear()
    async with Batcher(model, name="first", max_batch=2, max_wait_s=0) as batcher:
        first = asyncio.create_task(batcher.submit([1, 2], timeout_s=5))
        await asyncio.to_thread(model.started.wait, 5)
        await eventually(lambda: batcher.wait_s(10) >= 0.25)  # 0.025 s an input, and no batch done
        with pytest.raises(Unavailable, match="these 10 inputs would be done in about"):
            await batcher.submit(list(range(10)), timeout_s=0.2)
        model.gate.set()
        assert await first == [2, 4]
    assert model.batches == [[1, 2]]


async def test_a_model_call_that_would_end_after_every_deadline_stops_at_once_and_answers_503_early():
    """No pace known (an idle model): a request whose inputs, at the pace the first steps keep,
    would be done long after its deadline is admitted; the model stops after its first step, and
    the caller hears 503 then, not at its deadline."""
    steps: list[int] = []

    def model(items: list[int]) -> list[int]:
        for number, _ in enumerate(items):
            if number and not batcher.wanted(number):
                raise Abandoned(number)
            steps.append(number)
            time.sleep(0.02)
        return [item * 2 for item in items]

    async with Batcher(model, name="hopeless", max_batch=200, max_wait_s=0) as batcher:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):  # 200 steps of 0.02 s: 4 s, against a 2 s deadline
            await batcher.submit(list(range(200)), timeout_s=2.0)
        assert time.monotonic() - started < 1.0  # told at the first step, not at the deadline
        assert steps == [0]
        # a request that fits its deadline at that pace runs to its end
        assert await batcher.submit(list(range(5)), timeout_s=5.0) == [item * 2 for item in range(5)]
        assert steps[-1] == 4


async def test_a_model_call_nobody_waits_for_any_more_stops_part_way_and_sets_the_pace():
    """The model computes one input a step and asks `wanted()` before each: once its only caller
    has been answered 503 (deadline), it stops, the stopped inputs are counted, the pace says how
    slow the steps were, and the next caller is served."""
    steps: list[int] = []
    stop = threading.Event()

    def model(items: list[int]) -> list[int]:
        for number, _ in enumerate(items):
            if number and not batcher.wanted():
                stop.set()
                raise Abandoned(number)
            steps.append(number)
            time.sleep(0.02)
        return [item * 2 for item in items]

    before = sample("sophia_ml_abandoned_inputs_total", model="slow")
    async with Batcher(model, name="slow", max_batch=100, max_wait_s=0) as batcher:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(list(range(100)), timeout_s=0.15)
        await asyncio.to_thread(stop.wait, 5)
        await eventually(lambda: batcher._running is None)
        assert 2 <= len(steps) < 50  # stopped soon after the deadline, not after 100 steps (2 s)
        assert sample("sophia_ml_abandoned_inputs_total", model="slow") - before == 100 - len(steps)
        assert batcher.wait_s(1) >= 0.015  # the steps it did measured the pace: 0.02 s an input
        assert await batcher.submit([3], timeout_s=5) == [6]
