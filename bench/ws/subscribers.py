"""The client load of bench/realtime.py: generator.py's `websockets` clients, each authenticated in
its handshake and, when a channel is given, subscribed to it before it counts as connected.

    python bench/ws/subscribers.py --url ws://127.0.0.1:8001/ws

The commands of generator.py (`control`, `run`, `close`), with two changes:

- `{"op": "connect", "count": N, "concurrency": C, "timeout_s": T, "headers": {...},
  "channel": "system-events" or null}`: each client sends the headers in its handshake, then
  `{"op": "subscribe", "id": 1, "channel": ...}` and waits for `subscribed`;
- `{"op": "count", "warmup_s": 1, "duration_s": 10, "raw": false}`: a window like `run`'s but
  without a control connection (someone else makes the frames) -> `window`, `window_end`, then
  `result` once the clients went quiet; with `raw`, the result also carries every latency
  (`latencies_ns_b64`: int64 in native order, base64), for merging the windows of several
  generator processes.

A frame's latency is its receive time minus the `time.time_ns()` stamp it carries: at its head (a
bare server's round, rounds.py) or after `"stamp_ns":` (a Sophia publication whose event payload
holds it). Frames without a stamp (replies) are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from array import array
from typing import Any

import generator
import rounds
import uvloop
from raw_client import RawClients
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

STAMP = '"stamp_ns":'


class StampTally(generator.Tally):
    """generator.py's tally, reading the stamp at a frame's head or after `STAMP`."""

    def record(self, head: bytes | str) -> None:
        received_ns = time.time_ns()
        self.last_frame_s = time.monotonic()
        if not self.counting:
            return
        text = head.decode() if isinstance(head, bytes) else head
        if text[:1].isdigit():
            self.latencies_ns.append(received_ns - int(text[: rounds.TIMESTAMP_DIGITS]))
            return
        at = text.find(STAMP)
        if at >= 0:
            start = at + len(STAMP)
            self.latencies_ns.append(received_ns - int(text[start : start + rounds.TIMESTAMP_DIGITS]))


class SubscribedClients(generator.WebsocketsClients):
    """`websockets` clients that send `headers` in the handshake and subscribe to `channel`."""

    def __init__(self, tally: generator.Tally) -> None:
        super().__init__(tally)
        self.headers: dict[str, str] = {}
        self.channel: str | None = None

    async def open(self, url: str, timeout_s: float) -> None:
        try:
            connection = await connect(
                url,
                additional_headers=self.headers,
                compression=None,
                ping_interval=None,
                open_timeout=timeout_s,
                max_size=None,
            )
        except WebSocketException as refused:  # a refused handshake (401, 429...) counts as failed
            raise RuntimeError(f"{type(refused).__name__}: {refused}") from None
        if self.channel is not None:
            try:
                await connection.send(json.dumps({"op": "subscribe", "id": 1, "channel": self.channel}))
                answer = json.loads(await asyncio.wait_for(connection.recv(), timeout_s))
            except (WebSocketException, TimeoutError) as failed:
                await connection.close()
                raise RuntimeError(f"subscribing failed: {type(failed).__name__}: {failed}") from None
            if answer.get("type") != "subscribed":
                await connection.close()
                raise RuntimeError(f"subscribe was answered {answer}")
        self.connections.append(connection)
        reader = asyncio.create_task(self._read(connection))
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)


class Subscribers(generator.Generator):
    """generator.py's generator with subscribed clients and windows driven from outside."""

    def __init__(self, url: str, client: str = "raw") -> None:
        super().__init__(url, "websockets")
        self.tally = StampTally()
        self.clients = RawClients(self.tally) if client == "raw" else SubscribedClients(self.tally)

    async def count(self, *, warmup_s: float, duration_s: float, raw: bool = False) -> dict[str, Any]:
        dropped_before = self.tally.dropped
        await asyncio.sleep(warmup_s)
        self.tally.latencies_ns = array("q")
        self.tally.counting = True
        started = time.perf_counter()
        generator.emit({"event": "window"})
        await asyncio.sleep(duration_s)
        self.tally.counting = False
        seconds = time.perf_counter() - started
        generator.emit({"event": "window_end"})
        await self._quiet(deadline_s=60)
        latencies = sorted(self.tally.latencies_ns)
        answer = {
            "event": "result",
            "frames": len(latencies),
            "seconds": round(seconds, 3),
            "dropped": self.tally.dropped - dropped_before,
            "connections_open": len(self.clients.readers),
            **generator.percentiles_ms(latencies),
        }
        if raw:
            answer["latencies_ns_b64"] = base64.b64encode(self.tally.latencies_ns.tobytes()).decode()
        return answer


async def serve_commands(subscribers: Subscribers) -> None:
    while line := await asyncio.to_thread(sys.stdin.readline):
        request = json.loads(line)
        match request["op"]:
            case "control":
                generator.emit(await subscribers.open_control())
            case "connect":
                subscribers.clients.headers = request.get("headers") or {}
                subscribers.clients.channel = request.get("channel")
                answer = await subscribers.connect(
                    request["count"], request["concurrency"], request["timeout_s"]
                )
                generator.emit(answer)
            case "run":
                answer = await subscribers.run(
                    request["command"], warmup_s=request["warmup_s"], duration_s=request["duration_s"]
                )
                generator.emit(answer)
            case "count":
                generator.emit(
                    await subscribers.count(
                        warmup_s=request["warmup_s"],
                        duration_s=request["duration_s"],
                        raw=bool(request.get("raw")),
                    )
                )
            case "close":
                with contextlib.suppress(TimeoutError):
                    await subscribers.close()
                generator.emit({"event": "closed"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", required=True, help="the clients' URL, ending in /ws")
    parser.add_argument(
        "--client",
        choices=("raw", "websockets"),
        default="raw",
        help="raw: raw_client.py's frame reader (the default); websockets: its asyncio client",
    )
    options = parser.parse_args()
    uvloop.run(serve_commands(Subscribers(options.url, options.client)))


if __name__ == "__main__":
    main()
