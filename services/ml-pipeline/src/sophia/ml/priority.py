"""The models' threads run at a lower CPU priority than request handling (`SOPHIA_ML_NICE`).

On a machine whose cores are all busy embedding, the kernel then gives the event loop the CPU
first, so health checks, key checks and database connects answer on time instead of queueing
behind model work (which raised connect timeouts that read as PostgreSQL being down). Linux keeps
a nice value per thread, and a thread starts with its creator's: the batcher's thread is lowered,
and the encoder is opened in a lowered thread so the threads ONNX Runtime starts for it are too.
Where a thread's priority cannot be set, nothing changes and the log says so once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sophia.shared.logging import get_logger

T = TypeVar("T")

log = get_logger(__name__)
_warned = False


def lower_this_thread(increment: int) -> None:
    """Raise the calling thread's nice value by `increment` (at most to 19)."""
    global _warned
    if increment <= 0:
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + increment))
    except (OSError, AttributeError) as error:
        if not _warned:
            _warned = True
            log.warning("ml_priority_not_lowered", error=str(error))


def in_lowered_thread(increment: int, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a new thread lowered by `increment`, waited for (threads it starts inherit
    the priority)."""
    outcome: list[Any] = []

    def run() -> None:
        lower_this_thread(increment)
        try:
            outcome.append((True, call(*args)))
        except BaseException as error:  # handed to the caller below
            outcome.append((False, error))

    thread = threading.Thread(target=run, name="ml-lowered")
    thread.start()
    thread.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value  # type: ignore[no-any-return]
