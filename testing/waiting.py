"""Waiting for something another task, process or engine does: poll a condition, never sleep a
guessed time (a sleep is either too short on a slow machine or wasted on a fast one)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import pytest


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0, poll_s: float = 0.005) -> None:
    """Until `condition()` (a value or an awaitable) is true; past `timeout_s` the test fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(poll_s)
