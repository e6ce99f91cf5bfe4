"""CPU seconds by component of the benchmark's process tree: the client, the API, PostgreSQL, NATS..."""

from __future__ import annotations

import os
from pathlib import Path

ENGINE_NAMES = {"postgres": "postgres", "nats-server": "nats", "valkey-server": "valkey"}


def process_cpu_s(pid: int) -> float | None:
    """The CPU seconds process `pid` of this machine has taken so far (None if it cannot be read:
    gone, or another machine's, as a PostgreSQL backend of an external server is)."""
    try:
        values = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")


class CpuSplit:
    """Over a `with` block, the CPU seconds each component of this process tree took (`seconds`).

    `roots` names child processes (the API, the workers): each process counts for the nearest of
    them among its ancestors, then engines by their name (`postgres`, `nats-server`), then this
    process as `benchmark`, and whatever else as `other`. A process that ends inside the block
    counts through its parent's reaped-children time, under the parent's label: a PostgreSQL
    backend under `postgres`, a load generator this process ran to its end (k6, wrk) under
    `benchmark`. So keep the roots themselves running through it. `reaped_as` counts the ended
    children of the processes of a label under a label of their own instead (`{"benchmark": "k6"}`:
    the load generators this process ran, apart from its own work)."""

    def __init__(self, roots: dict[str, int], reaped_as: dict[str, str] | None = None) -> None:
        self.roots = {pid: label for label, pid in roots.items()}
        self.reaped_as = reaped_as or {}
        self.seconds: dict[str, float] = {}
        self._start: dict[tuple[int, str], int] = {}

    def _sample(self) -> dict[tuple[int, str], int]:
        """Each process of the tree: its CPU ticks so far, by (pid, label)."""
        parents: dict[int, int] = {}
        facts: dict[int, tuple[str, int, int]] = {}
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
            # utime + stime, and cutime + cstime: a child's time moves to its parent's when reaped
            facts[pid] = (
                head.split("(", 1)[1],
                int(values[11]) + int(values[12]),
                int(values[13]) + int(values[14]),
            )
        me = os.getpid()
        sample: dict[tuple[int, str], int] = {}
        for pid, (name, own, reaped) in facts.items():
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
            if label in self.reaped_as:
                sample[(pid, label)] = own
                sample[(pid, self.reaped_as[label])] = reaped
            else:
                sample[(pid, label)] = own + reaped
        return sample

    def __enter__(self) -> CpuSplit:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        totals: dict[str, float] = {}
        end = self._sample()
        # a process gone by the end counts 0 there: its parent's reaped time holds all of it
        for key in end.keys() | self._start.keys():
            label = key[1]
            totals[label] = totals.get(label, 0.0) + (end.get(key, 0) - self._start.get(key, 0)) / ticks_per_s
        self.seconds = {label: round(seconds, 2) for label, seconds in sorted(totals.items())}
