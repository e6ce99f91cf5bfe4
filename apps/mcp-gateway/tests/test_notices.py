"""What picks a request's transport, and how list changes are sent: the parts the e2e tests (real
upstreams, the SDK's client) cannot vary."""

from __future__ import annotations

from typing import Any

import pytest
from waiting import eventually

from sophia.mcp_gateway.notices import PEEK_BYTES, ListChanges, ProgressAware


class Recorder:
    """An ASGI app that reads the whole body it is given and remembers it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)


def chunks(*parts: bytes) -> Any:
    messages = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{},'
ASKING = CALL + b'"_meta":{"progressToken":"p1"}}}'
PLAIN = CALL + b'"_meta":{}}}'


@pytest.mark.parametrize(
    ("parts", "streamed"),
    [
        ((ASKING,), True),
        ((ASKING[:40], ASKING[40:]), True),  # the token split across two chunks of the body
        ((PLAIN,), False),
        ((b"x" * (PEEK_BYTES + 1), ASKING), False),  # past what is read to look: answered in JSON
    ],
    ids=["asks", "asks-in-chunks", "plain", "too-long-to-look"],
)
async def test_a_post_asking_for_progress_goes_to_the_streaming_transport_body_whole(parts, streamed):
    plain, streaming = Recorder(), Recorder()
    scope = {"type": "http", "method": "POST", "path": "/mcp"}
    await ProgressAware(plain, streaming)(scope, chunks(*parts), None)
    chosen, other = (streaming, plain) if streamed else (plain, streaming)
    assert chosen.bodies == [b"".join(parts)]
    assert other.bodies == []


async def test_other_methods_go_to_the_plain_transport_unread():
    plain, streaming = Recorder(), Recorder()
    await ProgressAware(plain, streaming)({"type": "http", "method": "GET"}, chunks(b""), None)
    assert plain.bodies == [b""]
    assert streaming.bodies == []


async def test_changes_in_one_turn_of_the_loop_are_published_once():
    changes = ListChanges()
    heard: list[object] = []
    changes.bus.subscribe(heard.append)
    changes.changed()
    changes.changed()  # the same burst
    await eventually(lambda: heard)  # polled after a sleep: a second publication would be in too
    assert len(heard) == 1
    changes.changed()  # a later change is published again
    await eventually(lambda: len(heard) == 2)
    changes.close()
