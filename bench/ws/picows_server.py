"""A bare broadcast server on picows, for bench/ws_servers.py.

    python bench/ws/picows_server.py --port 8765

picows calls a listener per connection from its protocol, with no task per connection; a round
is a loop of `transport.send()` over the connected clients (picows builds each frame in C). Flow
control comes from the listeners' pause_writing/resume_writing. The loop is uvloop, as the API runs.
"""

from __future__ import annotations

import asyncio

import rounds
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

CLIENTS_PATH = rounds.CLIENTS_PATH.encode()  # picows gives the request's path as bytes
CONTROL_PATH = rounds.CONTROL_PATH.encode()


class BroadcastServer:
    """The connected clients and the control connections' running commands."""

    def __init__(self) -> None:
        self.clients: set[WSTransport] = set()
        self.backpressure = rounds.Backpressure()
        self.commands: set[asyncio.Task[None]] = set()

    def listener(self, request: WSUpgradeRequest) -> WSListener | None:
        if request.path == CLIENTS_PATH:
            return Client(self)
        if request.path == CONTROL_PATH:
            return Control(self)
        return None  # picows answers 404

    async def send_round(self, frame: str) -> None:
        payload = frame.encode()
        for transport in self.clients:
            transport.send(WSMsgType.TEXT, payload)
        await self.backpressure.wait()

    async def command(self, transport: WSTransport, text: str) -> None:
        done = await rounds.broadcast(rounds.Command.parse(text), self.send_round)
        transport.send(WSMsgType.TEXT, done.encode())


def close_on_request(transport: WSTransport, frame: WSFrame) -> None:
    if frame.msg_type == WSMsgType.CLOSE:
        transport.send_close(frame.get_close_code())
        transport.disconnect()


class Client(WSListener):  # type: ignore[misc]  # picows is not in the lock
    def __init__(self, server: BroadcastServer) -> None:
        super().__init__()
        self.server = server

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.server.clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.server.clients.discard(transport)
        self.server.backpressure.resume(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        close_on_request(transport, frame)

    def pause_writing(self) -> None:
        self.server.backpressure.pause(self)

    def resume_writing(self) -> None:
        self.server.backpressure.resume(self)


class Control(WSListener):  # type: ignore[misc]  # picows is not in the lock
    def __init__(self, server: BroadcastServer) -> None:
        super().__init__()
        self.server = server

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            task = asyncio.get_running_loop().create_task(
                self.server.command(transport, frame.get_payload_as_utf8_text())
            )
            self.server.commands.add(task)
            task.add_done_callback(self.server.commands.discard)
        close_on_request(transport, frame)


async def run(host: str, port: int) -> None:
    server = BroadcastServer()
    listening = await ws_create_server(server.listener, host, port, backlog=2048)
    async with listening:
        await listening.serve_forever()


def main() -> None:
    rounds.serve_from_command_line(run, __doc__)


if __name__ == "__main__":
    main()
