"""The kernel's share of the CPUs over a window of bench/ws_servers.py: interrupts and steal."""

from __future__ import annotations

import os
import time
from pathlib import Path


class KernelCpu:
    """Over a `with` block, the cores the kernel spent in interrupts (loopback networking runs there,
    charged in part to whichever process was running, in part to none) and stolen by the hypervisor."""

    def __init__(self) -> None:
        self.interrupt_cores = self.steal_cores = 0.0
        self._start: tuple[float, list[int]] = (0.0, [])

    @staticmethod
    def _sample() -> tuple[float, list[int]]:
        with Path("/proc/stat").open() as stat:
            return time.monotonic(), [int(value) for value in stat.readline().split()[1:9]]

    def __enter__(self) -> KernelCpu:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = self._sample()
        ticks = (end[0] - self._start[0]) * os.sysconf("SC_CLK_TCK")
        delta = [after - before for after, before in zip(end[1], self._start[1], strict=True)]
        self.interrupt_cores = round((delta[5] + delta[6]) / ticks, 3)  # irq + softirq
        self.steal_cores = round(delta[7] / ticks, 3)
