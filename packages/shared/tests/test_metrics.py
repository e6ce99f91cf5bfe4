"""Live gauges of worker processes that are gone are dropped; those of live processes are kept."""

import os
import subprocess
import sys

from sophia.shared import metrics


def test_the_gauges_of_dead_workers_are_dropped_and_those_of_live_ones_kept(tmp_path, monkeypatch):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid, own_pid, foreign_pid = int(finished.stdout), os.getpid(), 1
    for pid in (dead_pid, own_pid, foreign_pid):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")  # counters are kept: they are sums
    monkeypatch.setenv(metrics.MULTIPROCESS_DIR_VARIABLE, str(tmp_path))
    real_kill = os.kill

    def kill(pid: int, signal: int) -> None:
        if pid == foreign_pid:  # another user's process, whoever runs the tests
            raise PermissionError(pid)
        real_kill(pid, signal)

    monkeypatch.setattr(os, "kill", kill)
    metrics.forget_dead_workers()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livesum_{own_pid}.db", f"gauge_livesum_{foreign_pid}.db"]
    )
