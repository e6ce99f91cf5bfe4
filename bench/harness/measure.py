"""Measurements, the CPU others took meanwhile, percentiles and A/B ratios."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.database import Environment
from harness.report import machine


@dataclass(frozen=True)
class Measurement:
    """One side of a benchmark: successful operations over wall seconds, and latency percentiles."""

    operations: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    other_cpu: float | None = None
    """Share of the machine's CPU time that processes outside this benchmark took meanwhile."""

    @property
    def per_s(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        exact = asdict(self)
        rounded = {name: round(value, 3) for name, value in exact.items() if isinstance(value, float)}
        return {**exact, **rounded, "per_s": round(self.per_s, 1)}


class OtherCpu:
    """Measures, over a `with` block, the CPU share taken by processes outside this benchmark.

    The benchmark is this process and its descendants (engines it started, the API, wrk), counted
    with the children they already reaped; everything else the kernel reports busy is someone else.
    """

    def __init__(self) -> None:
        self.share: float | None = None
        self._start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        """(monotonic seconds, CPU seconds busy on the machine, CPU seconds of this process tree)."""
        ticks = os.sysconf("SC_CLK_TCK")
        with Path("/proc/stat").open() as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # user..steal, less idle and iowait
        parents: dict[int, int] = {}
        spent: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            values = stat_line.rsplit(")", 1)[1].split()
            pid = int(entry.name)
            parents[pid] = int(values[1])
            spent[pid] = sum(int(value) for value in values[11:15])  # utime stime cutime cstime
        tree, frontier = {os.getpid()}, [os.getpid()]
        for _ in range(len(parents)):  # bounded walk down the process tree
            if not frontier:
                break
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
            tree.update(children)
            frontier.extend(children)
        mine = sum(spent.get(pid, 0) for pid in tree)
        return time.monotonic(), busy / ticks, mine / ticks

    def __enter__(self) -> OtherCpu:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = self._sample()
        wall = end[0] - self._start[0]
        others = (end[1] - self._start[1]) - (end[2] - self._start[2])
        capacity = wall * len(os.sched_getaffinity(0))
        self.share = round(min(max(others / capacity, 0.0), 1.0), 3) if capacity > 0 else None


def settle(timeout_s: float, threshold: float = 0.1, window_s: float = 1.0) -> float | None:
    """Wait (at most `timeout_s`) for a `window_s` in which others take under `threshold` of the CPUs.

    On a shared machine this keeps other people's test runs out of most measurements; each
    measurement still records what others took while it ran (`other_cpu`).
    """
    share = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with OtherCpu() as other_cpu:
            time.sleep(min(window_s, max(deadline - time.monotonic(), 0.01)))
        share = other_cpu.share
        if share is not None and share < threshold:
            break
    return share


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (`fraction` 0.99 for p99)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(rounds: list[Measurement]) -> Measurement:
    """The round with the median throughput (the lower middle one of an even count)."""
    if not rounds:
        raise ValueError("no rounds")
    return sorted(rounds, key=lambda measurement: measurement.per_s)[(len(rounds) - 1) // 2]


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.per_s / denominator.per_s if denominator.per_s > 0 else 0.0


def paired_ratio(numerators: list[Measurement], denominators: list[Measurement]) -> float:
    """The median of per-round ratios: each pair ran back to back, under the same neighbours."""
    ratios = sorted(ratio(top, bottom) for top, bottom in zip(numerators, denominators, strict=True))
    if not ratios:
        raise ValueError("no rounds")
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def comparison(
    raw_rounds: list[Measurement], api_rounds: list[Measurement], goal: float, env: Environment
) -> dict[str, Any]:
    """The result fields every A/B benchmark reports: both sides, the ratios, every round, the machine."""
    raw, api = median(raw_rounds), median(api_rounds)
    return {
        "raw": raw.as_dict(),
        "api": api.as_dict(),
        "ratio": round(paired_ratio(api_rounds, raw_rounds), 3),
        "ratio_of_medians": round(ratio(api, raw), 3),
        "goal": goal,
        "raw_rounds": [measurement.as_dict() for measurement in raw_rounds],
        "api_rounds": [measurement.as_dict() for measurement in api_rounds],
        "machine": machine(env),
    }


def side_line(label: str, measurement: Measurement, unit: str) -> str:
    """One side of a benchmark, as the human summary prints it."""
    text = f"  {label:<26}{measurement.per_s:>10,.0f} {unit}/s"
    if measurement.p50_ms is not None and measurement.p99_ms is not None:
        text += f"  p50 {measurement.p50_ms:6.2f} ms  p99 {measurement.p99_ms:7.2f} ms"
    else:
        text += f"  ({measurement.seconds:.2f} s)"
    if measurement.errors:
        text += f"  errors {measurement.errors}"
    if measurement.other_cpu is not None:
        text += f"  [others took {measurement.other_cpu:.0%} of the CPUs]"
    return text
