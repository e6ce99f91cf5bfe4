"""`harness.CpuSplit`: CPU seconds by component of the benchmark's process tree, counting processes
that end inside the measured block (a PostgreSQL backend of a connection closed there) through
their parent. Real processes, no engines; in the load tier, with the benchmarks it serves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from harness.cpu import CpuSplit, process_cpu_s  # noqa: E402

pytestmark = pytest.mark.load

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> list[str]:
    return [sys.executable, "-c", BURN.format(seconds=seconds)]


def test_a_child_that_ends_inside_the_block_counts_for_its_parent():
    with CpuSplit({}) as split:
        subprocess.run(burn(0.2), check=True)
    assert split.seconds.get("benchmark", 0.0) >= 0.15, split.seconds


def test_ended_children_can_count_under_a_label_of_their_own():
    with CpuSplit({}, reaped_as={"benchmark": "generator"}) as split:
        subprocess.run(burn(0.2), check=True)
    assert split.seconds.get("generator", 0.0) >= 0.15, split.seconds
    assert split.seconds.get("benchmark", 0.0) < 0.1, split.seconds


def test_a_root_running_through_the_block_counts_under_its_label_only_for_the_block():
    root = subprocess.Popen(burn(5), stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.1)  # burning before the block: not counted
        with CpuSplit({"root": root.pid}) as split:
            time.sleep(0.25)
        assert 0.08 <= split.seconds.get("root", 0.0) <= 0.4, split.seconds
        assert split.seconds.get("benchmark", 0.0) < 0.1, split.seconds
    finally:
        root.kill()
        root.wait()


def test_a_processs_cpu_is_read_while_it_runs_and_none_once_it_is_gone():
    child = subprocess.Popen(burn(5), stdout=subprocess.DEVNULL)
    try:
        first = process_cpu_s(child.pid)
        time.sleep(0.3)
        later = process_cpu_s(child.pid)
        assert first is not None
        assert later is not None
        assert later - first >= 0.1, (first, later)
    finally:
        child.kill()
        child.wait()
    assert process_cpu_s(child.pid) is None  # reaped: no /proc entry left
