"""Model work runs below request handling: the batcher's thread and the threads that open models
are lowered by SOPHIA_ML_NICE, the event loop's thread is not."""

from __future__ import annotations

import os
import threading

import pytest

from sophia.ml.batching import Batcher
from sophia.ml.priority import in_lowered_thread


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_the_batchers_thread_runs_lowered_and_the_loops_thread_does_not():
    before = nice_of_this_thread()
    async with Batcher(lambda items: items, name="priority", nice=5) as batcher:
        in_model_thread = await batcher.in_model_thread(nice_of_this_thread, timeout_s=5)
        assert await batcher.submit(["x"], timeout_s=5) == ["x"]
    assert in_model_thread == min(19, before + 5)
    assert nice_of_this_thread() == before


def test_a_lowered_thread_hands_back_its_result_and_its_error():
    before = nice_of_this_thread()
    assert in_lowered_thread(3, nice_of_this_thread) == min(19, before + 3)

    def broken() -> None:
        raise ValueError("from the lowered thread")

    with pytest.raises(ValueError, match="from the lowered thread"):
        in_lowered_thread(3, broken)
    assert nice_of_this_thread() == before


def test_threads_started_by_a_lowered_thread_inherit_its_priority():
    """What makes ONNX Runtime's own threads run low: they start from the thread that opens the
    model."""
    seen: list[int] = []

    def start_a_thread() -> None:
        child = threading.Thread(target=lambda: seen.append(nice_of_this_thread()))
        child.start()
        child.join()

    before = nice_of_this_thread()
    in_lowered_thread(4, start_a_thread)
    assert seen == [min(19, before + 4)]
