"""The real-time service (`python -m sophia.realtime`) as a child process, and its memory."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.database import HOST, Environment
from harness.workers import WorkersProcess


class RealtimeProcess(WorkersProcess):
    """`python -m sophia.realtime` on a free port: ready once /healthz answers 200.

    Started and stopped like the API (its own process group, SIGTERM, then SIGKILL for what is
    left), with the engines' URLs and `extra_env`; its /metrics is beside /ws (`metric_sums`)."""

    ready_path = "/healthz"
    what = "the real-time service"

    def __init__(
        self,
        env: Environment,
        *,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            env, ready_timeout_s=ready_timeout_s, stop_timeout_s=stop_timeout_s, extra_env=extra_env
        )
        self.command = [sys.executable, "-m", "sophia.realtime"]
        self.extra_env = {
            **(extra_env or {}),
            "SOPHIA_REALTIME_HOST": HOST,
            "SOPHIA_REALTIME_PORT": str(self.port),
        }
        self.log_path = env.work_dir / f"realtime-{self.port}.log"
        self.ws_url = f"ws://{HOST}:{self.port}/ws"

    def __enter__(self) -> RealtimeProcess:
        super().__enter__()
        return self

    def check_running(self, what: str) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"{what} is not running:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """The resident memory of the service (one process: no workers, no supervisor)."""
        assert self.pid is not None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
