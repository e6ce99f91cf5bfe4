"""The `ops` channel: while someone listens, every `SOPHIA_REALTIME_OPS_INTERVAL_S` a publication of
this process's own figures, for a live dashboard of the service.

A tick has a publication's shape, its event an envelope's (`type`, `occurred_at`, `payload`):
`{"type": "ops.tick", "occurred_at": ..., "payload": {"connections", "subscriptions",
"frames_total", "slow_consumers_total", "bytes_total"}}`. It is no event of the bus: its position's
epoch names this ticker (`ops-<the time it was made, in µs>`), its seq counts the ticks published,
and nothing is kept to resume from. The ticker reads what the service counts anyway (its clients,
the hub's subscriptions, the Prometheus counters): publishing to the stream channels pays nothing
for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

import orjson
from prometheus_client import Counter

from sophia.realtime.channels import OPS
from sophia.realtime.hub import BYTES_OUT, FRAMES_OUT, SLOW_DROPPED, Hub
from sophia.realtime.protocol import publication

TICK = "ops.tick"


class OpsTicker:
    """`async with OpsTicker(hub, connections, interval_s=...)`: ticking on `ops` until left, its
    task then cancelled and awaited; `connections()` says how many clients are connected now."""

    def __init__(self, hub: Hub, connections: Callable[[], int], *, interval_s: float) -> None:
        self.hub = hub
        self.connections = connections
        self.interval_s = interval_s
        self.epoch = f"ops-{time.time_ns() // 1000}"
        self.live_seq = 0
        """The seq of the last tick published."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OpsTicker:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"realtime {self.epoch}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.hub.listened(OPS):
                self.tick()

    def tick(self) -> None:
        """Publish the figures of now on `ops`, at the next seq."""
        self.live_seq += 1
        event = {"type": TICK, "occurred_at": datetime.now(UTC), "payload": self.figures()}
        body = orjson.dumps(event, option=orjson.OPT_UTC_Z)
        self.hub.publish(OPS, self.live_seq, publication(OPS, self.epoch, self.live_seq, body))

    def figures(self) -> dict[str, object]:
        return {
            "connections": self.connections(),
            "subscriptions": self.hub.subscriptions_by_family(),
            "frames_total": _total(FRAMES_OUT),
            "slow_consumers_total": _total(SLOW_DROPPED),
            "bytes_total": _total(BYTES_OUT),
        }


def _total(counter: Counter) -> int:
    """What `counter` counted so far in this process (its `_total` sample)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return int(sample.value)
    return 0
