"""The floor of bench/hot_read.py: a bare ASGI app answering `GET /api/v1/records/{id}` with the bytes
and headers the API answered for that id, served by granian as `sophia.api.server` serves the API.

    SOPHIA_BENCH_RESPONSES_FILE=responses.json python bench/bare_app.py

Per request it does what any server of these bytes must: find the id's response in a dict and send
it. No auth, no middleware, no cache. The file maps each id to `{"body": str, "headers": [[name,
value], ...]}`; `/readyz` answers 200 so the harness can wait for it like for the API.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import orjson
from starlette.types import Message, Receive, Scope, Send

from sophia.shared.settings import Settings

RESPONSES_FILE_VARIABLE = "SOPHIA_BENCH_RESPONSES_FILE"
RECORDS_PATH = "/api/v1/records/"
READY_BODY = b'{"status":"ready"}'
READY = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(READY_BODY))], READY_BODY
NOT_FOUND = [(b"content-length", b"0")], b""

StoredResponse = tuple[list[tuple[bytes, bytes]], bytes]


def load_responses(path: Path) -> dict[str, StoredResponse]:
    """The file's responses by record id, headers and body as the bytes to send."""
    stored = orjson.loads(path.read_bytes())
    return {
        record_id: (
            [(name.encode("latin-1"), value.encode("latin-1")) for name, value in entry["headers"]],
            entry["body"].encode(),
        )
        for record_id, entry in stored.items()
    }


class BareApp:
    """Plain ASGI: the stored response for a known id, 404 for anything else, 200 on /readyz."""

    def __init__(self, responses: dict[str, StoredResponse]) -> None:
        self.responses = responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        status, (headers, body) = 200, READY
        if path.startswith(RECORDS_PATH):
            found = self.responses.get(path[len(RECORDS_PATH) :])
            status, (headers, body) = (200, found) if found is not None else (404, NOT_FOUND)
        elif path != "/readyz":
            status, (headers, body) = 404, NOT_FOUND
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def factory() -> BareApp:
    """Entry point for granian (`factory=True`), run in each worker."""
    return BareApp(load_responses(Path(os.environ[RESPONSES_FILE_VARIABLE])))


def serve(settings: Settings) -> None:
    """granian with the options of `sophia.api.server._run`, on this app."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "bare_app:factory",
        factory=True,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.ASGI,
        workers=settings.api_workers,
        loop=Loops.uvloop,
        backlog=2048,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=math.ceil(settings.shutdown_grace_s),
        working_dir=Path(__file__).resolve().parent,
    ).serve()


if __name__ == "__main__":
    serve(Settings())
