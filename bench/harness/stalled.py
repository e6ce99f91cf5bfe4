"""Slow-body clients: requests that send their headers and a first chunk of body, then nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

from harness.database import HOST


@dataclass
class Stalls:
    """What the stalled requests met: connections opened, the answers by status, how many hang now."""

    opened: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    """By status code; `closed` for a connection closed without an answer; an OSError by its name."""
    hanging: int = 0
    fewest_hanging: int | None = None
    """Fewest hanging at once while `watch` ran (reopening one after its answer takes a moment)."""

    async def watch(self, every_s: float = 0.2) -> None:
        """Keep `fewest_hanging` until cancelled."""
        while True:
            if self.fewest_hanging is None or self.hanging < self.fewest_hanging:
                self.fewest_hanging = self.hanging
            await asyncio.sleep(every_s)


def chunked_request(port: int, path: str, headers: dict[str, str], first_chunk: bytes) -> bytes:
    """`POST path` with a chunked body whose first chunk is `first_chunk` (and no last chunk)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + f"\r\n\r\n{len(first_chunk):x}\r\n").encode()
    return head + first_chunk + b"\r\n"


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _answer_or_stop(reader: asyncio.StreamReader, stop: asyncio.Event) -> bytes | None:
    """The start of the server's answer (b'' if it closed), or None once `stop` is set."""
    read, stopped = asyncio.ensure_future(reader.read(64)), asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (read, stopped):
        task.cancel()
    return read.result() if read in done else None


async def _stall(request: bytes, port: int, source: str, stop: asyncio.Event, stalls: Stalls) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        except OSError as error:
            stalls.answers[type(error).__name__] += 1
            await _pause(stop, 1.0)
            continue
        try:
            writer.write(request)
            await writer.drain()
            stalls.opened += 1
            stalls.hanging += 1
            try:
                answer = await _answer_or_stop(reader, stop)
            finally:
                stalls.hanging -= 1
            if answer is not None:
                status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
                stalls.answers[status] += 1
                if status != "408":  # refused at once (a 503: too many at once): not a hot loop
                    await _pause(stop, 1.0)
        except OSError as error:
            stalls.answers[type(error).__name__] += 1
        finally:
            writer.close()


async def hold_stalled(
    request: bytes, *, port: int, count: int, stop: asyncio.Event, stalls: Stalls, source: str = HOST
) -> None:
    """Keep `count` connections to `port` (from address `source`) each stalled after sending
    `request`, opening a new one whenever the server answers or closes one, until `stop` is set."""
    await asyncio.gather(*(_stall(request, port, source, stop, stalls) for _ in range(count)))
