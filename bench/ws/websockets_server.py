"""A bare broadcast server on the `websockets` library's asyncio server, for bench/ws_servers.py.

    python bench/ws/websockets_server.py --port 8765

Rounds go out through `broadcast()`, as the library's documentation recommends for fan-out: the
frame is encoded once and written to every open connection without awaiting each. Compression is
off (one deflate context per connection would dominate both CPU and memory); pings keep their
defaults. The loop is uvloop, as the API runs.
"""

from __future__ import annotations

import rounds
from websockets.asyncio.server import ServerConnection, broadcast, serve


class BroadcastServer:
    """The connected clients, and the handler that serves them and the control connection."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.backpressure = rounds.Backpressure()

    def connection_class(self) -> type[ServerConnection]:
        """ServerConnection that reports its flow control to the backpressure."""
        backpressure = self.backpressure

        class TrackedConnection(ServerConnection):
            def pause_writing(self) -> None:
                super().pause_writing()
                backpressure.pause(self)

            def resume_writing(self) -> None:
                super().resume_writing()
                backpressure.resume(self)

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                backpressure.resume(self)

        return TrackedConnection

    async def handler(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else ""
        if path == rounds.CONTROL_PATH:
            async for message in connection:
                await connection.send(
                    await rounds.broadcast(rounds.Command.parse(str(message)), self.send_round)
                )
            return
        self.clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.clients.discard(connection)

    async def send_round(self, frame: str) -> None:
        broadcast(self.clients, frame)
        await self.backpressure.wait()


async def run(host: str, port: int) -> None:
    server = BroadcastServer()
    async with serve(
        server.handler,
        host,
        port,
        compression=None,
        create_connection=server.connection_class(),
        backlog=2048,
    ) as listening:
        await listening.serve_forever()


def main() -> None:
    rounds.serve_from_command_line(run, __doc__)


if __name__ == "__main__":
    main()
