"""The workers process (`python -m sophia.workers`: outbox relay and stream processors) as a child."""

from __future__ import annotations

import asyncio
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness.database import Environment
from harness.server import ApiServer


class WorkersProcess(ApiServer):
    """`python -m sophia.workers` with its /metrics served on a free port: ready once that answers.

    Started and stopped like the API (its own process group, SIGTERM, then SIGKILL for what is left),
    with the same environment: the engines' URLs and `extra_env`."""

    what = "the workers"

    def __init__(
        self,
        env: Environment,
        *,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 30.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            env,
            workers=1,
            ready_timeout_s=ready_timeout_s,
            stop_timeout_s=stop_timeout_s,
            extra_env=extra_env,
            command=[sys.executable, "-m", "sophia.workers"],
        )
        # a copy: the caller's dict may be shared with the API. Prometheus answers any path (/readyz).
        self.extra_env = {**self.extra_env, "SOPHIA_WORKERS_METRICS_PORT": str(self.port)}
        self.log_path = env.work_dir / f"workers-{self.port}.log"

    def __enter__(self) -> WorkersProcess:
        super().__enter__()
        return self

    async def metric_sums(self, names: set[str]) -> dict[str, float]:
        """Each named sample summed over its labels, from the workers' /metrics (0 when absent)."""
        sums = dict.fromkeys(names, 0.0)
        text = await asyncio.to_thread(self._metrics_text)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in sums:
                    sums[sample.name] += sample.value
        return sums

    def _metrics_text(self) -> str:
        # urllib rather than a new httpx client per poll: that builds an SSL context each time,
        # enough CPU to show when polled several times a second on a small machine.
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as response:
            return str(response.read().decode())
