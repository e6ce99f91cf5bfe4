"""Process helpers: a settled heap keeps what was loaded out of the collector's walks, once."""

from __future__ import annotations

import subprocess
import sys

SETTLE = """
import gc
from sophia.shared.process import settle_heap

loaded = [[index] for index in range(10_000)]  # what a service holds from its start
settle_heap()
frozen = gc.get_freeze_count()
settle_heap()  # a second start in the same process changes nothing
assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)

later = []
later.append(later)  # a cycle made after the start is still collected
del later
print(frozen, gc.collect())
"""


def test_settling_the_heap_freezes_what_was_loaded_once_and_still_collects_later_cycles():
    done = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frozen, collected = map(int, done.stdout.split())
    assert frozen >= 10_000
    assert collected >= 1
