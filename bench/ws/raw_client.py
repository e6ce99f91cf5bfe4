"""WebSocket clients at the cost of a frame header: an asyncio protocol per connection that does the
RFC 6455 handshake and reads the server's (unmasked, unfragmented) frames itself.

Latency measured by a client includes the client's own time to parse each frame. With 2,000
clients in one or two processes on the same two cores as the server, the `websockets` client's
~17 µs a frame made the last client of each broadcast wait ~30 ms for the others to be parsed:
the benchmark measured its clients. These clients hand each text frame's bytes to the tally and
answer pings and closes, nothing more (no UTF-8 check, no extensions, no fragments: the servers
under test send none); what they send (the subscription, pongs, the close) is masked as the RFC
requires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any
from urllib.parse import urlsplit

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN, `opcode`, the mask bit and a random mask over `payload`."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + body


class RawProtocol(asyncio.Protocol):
    """One connection: the handshake's answer, then frames; text frames go to `on_text`."""

    def __init__(self, on_text: Any, on_lost: Any) -> None:
        self.on_text = on_text
        self.on_lost = on_lost
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_text: asyncio.Future[bytes] | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio's
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(
                    ConnectionError(f"handshake refused: {status.decode(errors='replace')}")
                )
                return
            self.upgraded.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            size, start = second & 0x7F, offset + 2
            if size == 126:
                if len(buffer) - offset < 4:
                    break
                size, start = struct.unpack_from("!H", buffer, offset + 2)[0], offset + 4
            elif size == 127:
                if len(buffer) - offset < 10:
                    break
                size, start = struct.unpack_from("!Q", buffer, offset + 2)[0], offset + 10
            end = start + size
            if end > len(buffer):
                break
            self._frame(first & 0x0F, bytes(buffer[start:end]))
            offset = end
        del buffer[:offset]

    def _frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == TEXT:
            if self.first_text is not None and not self.first_text.done():
                self.first_text.set_result(payload)
            else:
                self.on_text(payload)
        elif opcode == PING:
            self.transport.write(masked(PONG, payload))
        elif opcode == CLOSE:
            self.transport.write(masked(CLOSE, payload[:2]))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for waiting in (self.upgraded, self.first_text):
            if waiting is not None and not waiting.done():
                waiting.set_exception(ConnectionError("connection closed"))
        self.on_lost()


class RawClients:
    """Clients that send `headers` in the handshake and, given a `channel`, subscribe to it."""

    def __init__(self, tally: Any) -> None:
        self.tally = tally
        self.headers: dict[str, str] = {}
        self.channel: str | None = None
        self.protocols: list[RawProtocol] = []

    @property
    def readers(self) -> list[RawProtocol]:
        """The connections still open (what `connections_open` counts)."""
        return [
            protocol
            for protocol in self.protocols
            if protocol.transport and not protocol.transport.is_closing()
        ]

    async def open(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            transport, protocol = await loop.create_connection(
                lambda: RawProtocol(self.tally.record, self.tally.lost), parts.hostname, parts.port
            )
            protocol.transport = transport  # uvloop may call connection_made after this returns
            lines = [
                f"GET {parts.path or '/'} HTTP/1.1",
                f"Host: {parts.hostname}:{parts.port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in self.headers.items()),
            ]
            transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            try:
                await protocol.upgraded
            except ConnectionError:
                transport.close()
                raise
            if self.channel is not None:
                protocol.first_text = loop.create_future()
                request = {"op": "subscribe", "id": 1, "channel": self.channel}
                transport.write(masked(TEXT, json.dumps(request).encode()))
                answer = json.loads(await protocol.first_text)
                if answer.get("type") != "subscribed":
                    transport.close()
                    raise RuntimeError(f"subscribe was answered {answer}")
        self.protocols.append(protocol)

    async def close(self) -> None:
        for protocol in self.protocols:
            if protocol.transport is not None and not protocol.transport.is_closing():
                protocol.transport.write(masked(CLOSE, struct.pack("!H", 1000)))
                protocol.transport.close()
        await asyncio.sleep(0)
