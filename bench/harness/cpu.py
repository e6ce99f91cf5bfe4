"""CPU seconds by component of the benchmark's process tree: the client, the API, PostgreSQL, NATS..."""

from __future__ import annotations

import os
from pathlib import Path

ENGINE_NAMES = {"postgres": "postgres", "nats-server": "nats", "valkey-server": "valkey"}


class CpuSplit:
    """Over a `with` block, the CPU seconds each component of this process tree took (`seconds`).

    `roots` names child processes (the API, the workers): each process counts for the nearest of
    them among its ancestors, then engines by their name (`postgres`, `nats-server`), then this
    process as `benchmark`, and whatever else as `other`. A process that ends inside the block
    counts through its parent's reaped-children time, under the parent's label: a PostgreSQL
    backend under `postgres`, a load generator this process ran to its end (k6, wrk) under
    `benchmark`. So keep the roots themselves running through it."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = {pid: label for label, pid in roots.items()}
        self.seconds: dict[str, float] = {}
        self._start: dict[int, tuple[str, int]] = {}

    def _sample(self) -> dict[int, tuple[str, int]]:
        """Each process of the tree: (its label, its CPU ticks so far)."""
        parents: dict[int, int] = {}
        facts: dict[int, tuple[str, int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            head, tail = stat_line.rsplit(")", 1)
            values = tail.split()
            pid = int(entry.name)
            parents[pid] = int(values[1])
            # utime + stime + cutime + cstime: a child's time moves to its parent's when it is reaped
            facts[pid] = (head.split("(", 1)[1], sum(int(value) for value in values[11:15]))
        me = os.getpid()
        sample = {}
        for pid, (name, ticks) in facts.items():
            label, ancestor = None, pid
            for _ in range(64):  # bounded walk up to init
                if ancestor in self.roots:
                    label = self.roots[ancestor]
                    break
                if ancestor in (me, 0, 1):
                    break
                ancestor = parents.get(ancestor, 0)
            if ancestor != me and label is None:
                continue  # not ours
            label = label or ENGINE_NAMES.get(name) or ("benchmark" if pid == me else "other")
            sample[pid] = (label, ticks)
        return sample

    def __enter__(self) -> CpuSplit:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        totals: dict[str, float] = {}
        end = self._sample()
        for pid in end.keys() | self._start.keys():
            label, after = end.get(pid) or (self._start[pid][0], 0)
            before = self._start.get(pid, (label, 0))[1]
            totals[label] = totals.get(label, 0.0) + (after - before) / ticks_per_s
        self.seconds = {label: round(seconds, 2) for label, seconds in sorted(totals.items())}
