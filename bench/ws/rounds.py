"""What every broadcast server of bench/ws_servers.py shares: the frame, the control commands and
the schedule of broadcast rounds.

A server accepts clients on `/ws` and one control connection on `/control`. The control connection
sends `saturate SECONDS` (rounds back to back, as fast as the server can) or `rate ROUNDS_PER_S
SECONDS` (rounds at fixed times); when the rounds are over the server answers `done ROUNDS
MAX_LATE_NS`, the latest a round started after its scheduled time. A round sends one prepared
200-byte text frame to every client; the frame starts with the `time.time_ns()` at which the round
began, 19 digits, so that a client can tell how long the frame took to reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CLIENTS_PATH = "/ws"
CONTROL_PATH = "/control"
FRAME_BYTES = 200
TIMESTAMP_DIGITS = 19
PADDING = "x" * (FRAME_BYTES - TIMESTAMP_DIGITS - 1)


def frame(timestamp_ns: int) -> str:
    """The round's frame: its start time in nanoseconds, a space, padding up to 200 bytes."""
    return f"{timestamp_ns:0{TIMESTAMP_DIGITS}d} {PADDING}"


@dataclass(frozen=True)
class Command:
    """Broadcast for `duration_s`: at `rounds_per_s`, or as fast as the server can when it is None."""

    duration_s: float
    rounds_per_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Command:
        match text.split():
            case ["saturate", duration_s]:
                return cls(float(duration_s))
            case ["rate", rounds_per_s, duration_s] if float(rounds_per_s) > 0:
                return cls(float(duration_s), float(rounds_per_s))
        raise ValueError(f"unknown command {text!r}")

    def text(self) -> str:
        if self.rounds_per_s is None:
            return f"saturate {self.duration_s:g}"
        return f"rate {self.rounds_per_s:g} {self.duration_s:g}"


SendRound = Callable[[str], Awaitable[None]]
"""Sends one frame to every connected client; returns once the server may send the next round."""


async def broadcast(command: Command, send_round: SendRound) -> str:
    """Run the command's rounds through `send_round`; the `done` answer for the control connection."""
    rounds = max_late_ns = 0
    started_ns = time.time_ns()
    end_ns = started_ns + int(command.duration_s * 1e9)
    if command.rounds_per_s is None:
        while (now_ns := time.time_ns()) < end_ns:
            await send_round(frame(now_ns))
            rounds += 1
            await asyncio.sleep(0)  # let the loop read and write between rounds
    else:
        period_ns = 1e9 / command.rounds_per_s
        while (scheduled_ns := started_ns + int(rounds * period_ns)) < end_ns:
            if (wait_ns := scheduled_ns - time.time_ns()) > 0:
                await asyncio.sleep(wait_ns / 1e9)
            now_ns = time.time_ns()
            max_late_ns = max(max_late_ns, now_ns - scheduled_ns)
            await send_round(frame(now_ns))
            rounds += 1
    return f"done {rounds} {max_late_ns}"


class Backpressure:
    """The connections whose write buffer is above its high-water mark; a round waits until none is.

    Broadcasting pushes frames without waiting, so a saturating server must itself stop while a
    client is behind, or it only fills memory. The wait is bounded: a client that never reads
    stalls a round for `max_wait_s`, not for ever."""

    def __init__(self, max_wait_s: float = 1.0) -> None:
        self.max_wait_s = max_wait_s
        self._paused: set[object] = set()
        self._clear = asyncio.Event()
        self._clear.set()

    def pause(self, connection: object) -> None:
        self._paused.add(connection)
        self._clear.clear()

    def resume(self, connection: object) -> None:
        self._paused.discard(connection)
        if not self._paused:
            self._clear.set()

    async def wait(self) -> None:
        if self._paused:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear.wait(), self.max_wait_s)


def serve_from_command_line(run: Callable[[str, int], Awaitable[None]], description: str | None) -> None:
    """`--host` and `--port` from the command line, then `run(host, port)` on uvloop."""
    import argparse

    import uvloop

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    uvloop.run(run(options.host, options.port))
