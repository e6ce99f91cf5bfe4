"""The client load of bench/ws_servers.py: many WebSocket clients in one process, driven by JSON lines.

    python bench/ws/generator.py --url ws://127.0.0.1:8765 [--client picows|websockets]

Commands come one JSON object a line on stdin; answers go out as JSON lines on stdout:

- `{"op": "control"}` opens the control connection -> `{"event": "control"}`
- `{"op": "connect", "count": N, "concurrency": C, "timeout_s": T}` opens N clients on /ws ->
  `{"event": "connected", "connected": n, "failed": f, "seconds": s, "error": the first one or null}`
- `{"op": "run", "command": "rate 25 11", "warmup_s": 1, "duration_s": 10}` sends the command to the
  server, then `{"event": "window"}` when counting starts, `{"event": "window_end"}` when it stops,
  and `{"event": "result", ...}` once the server answered `done` and the clients went quiet
- `{"op": "close"}` -> `{"event": "closed"}`, and the process ends

Only frames received inside the window count; each one's latency is its receive time minus the
timestamp at its head. Both client kinds do the same per frame; picows does it in far less CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from array import array
from typing import Any

import rounds
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

QUIET_S = 0.5
"""The clients have drained once no frame arrived for this long."""


class Tally:
    """Frames received in the counting window and their latencies; connections lost meanwhile."""

    def __init__(self) -> None:
        self.counting = False
        self.latencies_ns = array("q")
        self.last_frame_s = time.monotonic()
        self.closing = False
        self.dropped = 0

    def record(self, head: bytes | str) -> None:
        received_ns = time.time_ns()
        self.last_frame_s = time.monotonic()
        if self.counting:
            self.latencies_ns.append(received_ns - int(head[: rounds.TIMESTAMP_DIGITS]))

    def lost(self) -> None:
        if not self.closing:
            self.dropped += 1


class WebsocketsClients:
    """Clients on the `websockets` asyncio client: one reading task per connection."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.connections: list[ClientConnection] = []
        self.readers: set[asyncio.Task[None]] = set()

    async def open(self, url: str, timeout_s: float) -> None:
        connection = await connect(url, compression=None, ping_interval=None, open_timeout=timeout_s)
        self.connections.append(connection)
        reader = asyncio.create_task(self._read(connection))
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)

    async def _read(self, connection: ClientConnection) -> None:
        try:
            async for message in connection:
                self.tally.record(message)
        except ConnectionClosed:
            pass
        self.tally.lost()

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self.connections), return_exceptions=True)


def picows_clients(tally: Tally) -> Any:
    """Clients on picows: a listener per connection, called for each frame from its protocol."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):  # type: ignore[misc]  # picows is not in the lock
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                tally.record(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            tally.lost()

    class PicowsClients:
        def __init__(self) -> None:
            self.transports: list[WSTransport] = []

        async def open(self, url: str, timeout_s: float) -> None:
            transport, _ = await asyncio.wait_for(ws_connect(Listener, url), timeout_s)
            self.transports.append(transport)

        async def close(self) -> None:
            for transport in self.transports:
                transport.send_close()
                transport.disconnect()

    return PicowsClients()


class Generator:
    """The clients, the control connection and the commands that drive them."""

    def __init__(self, url: str, client: str) -> None:
        self.url = url
        self.tally = Tally()
        self.clients = picows_clients(self.tally) if client == "picows" else WebsocketsClients(self.tally)
        self.control: ClientConnection | None = None

    async def open_control(self) -> dict[str, Any]:
        self.control = await connect(
            self.url.removesuffix(rounds.CLIENTS_PATH) + rounds.CONTROL_PATH,
            compression=None,
            ping_interval=None,
            open_timeout=10,
        )
        return {"event": "control"}

    async def connect(self, count: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
        limit = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one() -> None:
            async with limit:
                try:
                    await self.clients.open(self.url, timeout_s)
                except (OSError, TimeoutError, ConnectionClosed, ValueError, RuntimeError) as error:
                    errors.append(f"{type(error).__name__}: {error}")

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return {
            "event": "connected",
            "connected": count - len(errors),
            "failed": len(errors),
            "seconds": round(time.perf_counter() - started, 3),
            "error": errors[0] if errors else None,
        }

    async def run(self, command: str, *, warmup_s: float, duration_s: float) -> dict[str, Any]:
        assert self.control is not None, "open the control connection first"
        dropped_before = self.tally.dropped
        await self.control.send(command)
        await asyncio.sleep(warmup_s)
        self.tally.latencies_ns = array("q")
        self.tally.counting = True
        started = time.perf_counter()
        emit({"event": "window"})
        await asyncio.sleep(duration_s)
        self.tally.counting = False
        seconds = time.perf_counter() - started
        emit({"event": "window_end"})
        done = await asyncio.wait_for(
            self.control.recv(), timeout=rounds.Command.parse(command).duration_s + 60
        )
        _, rounds_sent, max_late_ns = str(done).split()
        await self._quiet(deadline_s=60)
        latencies = sorted(self.tally.latencies_ns)
        return {
            "event": "result",
            "frames": len(latencies),
            "seconds": round(seconds, 3),
            "rounds": int(rounds_sent),
            "max_late_ms": int(max_late_ns) / 1e6,
            "dropped": self.tally.dropped - dropped_before,
            **percentiles_ms(latencies),
        }

    async def _quiet(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            idle_s = time.monotonic() - self.tally.last_frame_s
            if idle_s >= QUIET_S:
                return
            await asyncio.sleep(QUIET_S - idle_s)

    async def close(self) -> None:
        self.tally.closing = True
        await asyncio.wait_for(self.clients.close(), 30)
        if self.control is not None:
            await asyncio.wait_for(self.control.close(), 10)


def percentiles_ms(ascending_ns: list[int]) -> dict[str, float | None]:
    """p50, p99, p99.9 and max in milliseconds (nearest rank), None without a value."""
    found: dict[str, float | None] = {}
    for name, fraction in (("p50_ms", 0.50), ("p99_ms", 0.99), ("p999_ms", 0.999), ("max_ms", 1.0)):
        if ascending_ns:
            rank = max(1, min(len(ascending_ns), math.ceil(fraction * len(ascending_ns))))
            found[name] = round(ascending_ns[rank - 1] / 1e6, 3)
        else:
            found[name] = None
    return found


def emit(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def serve_commands(generator: Generator) -> None:
    while line := await asyncio.to_thread(sys.stdin.readline):
        request = json.loads(line)
        match request["op"]:
            case "control":
                emit(await generator.open_control())
            case "connect":
                emit(await generator.connect(request["count"], request["concurrency"], request["timeout_s"]))
            case "run":
                answer = await generator.run(
                    request["command"], warmup_s=request["warmup_s"], duration_s=request["duration_s"]
                )
                emit(answer)
            case "close":
                with contextlib.suppress(TimeoutError):
                    await generator.close()
                emit({"event": "closed"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", required=True, help="the clients' URL, ending in /ws")
    parser.add_argument("--client", choices=("picows", "websockets"), default="websockets")
    options = parser.parse_args()
    uvloop.run(serve_commands(Generator(options.url, options.client)))


if __name__ == "__main__":
    main()
