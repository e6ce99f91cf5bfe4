"""The WebSocket protocol: JSON text frames, one object each (docs/realtime.md).

Client -> server:
    {"op": "subscribe", "channel": "records:hubspot", "id": 1, "since": {"epoch": "...", "seq": 41}}
    {"op": "unsubscribe", "channel": "records:hubspot", "id": 2}
    {"op": "ping", "id": 3}
Server -> client:
    {"type": "subscribed", "id": 1, "channel": ..., "position": {"epoch", "seq"}, "recovered": true}
    {"type": "publication", "channel": ..., "position": {"epoch", "seq"}, "event": {envelope}}
    {"type": "unsubscribed", "id": 2, "channel": ...}
    {"type": "pong", "id": 3}
    {"type": "error", "id": 1, "code": "unknown_channel", "detail": "..."}

`id` (optional, an integer or a string of at most 64 characters) is echoed in the reply. A
publication is built once per channel from the event's stored bytes and written as is to every
subscriber: nothing is serialized per connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sophia.core.errors import SophiaError

OPS = {
    "subscribe": {"op", "id", "channel", "since"},
    "unsubscribe": {"op", "id", "channel"},
    "ping": {"op", "id"},
}
MAX_ID_LENGTH = 64
MAX_EPOCH_LENGTH = 64


QUOTE_MAX = 100
"""The characters of a client's string an error frame quotes back."""


def quoted(text: str) -> str:
    """`text` quoted for an error frame, cut to its first `QUOTE_MAX` characters: an answer never
    echoes an unbounded client string (each error frame is a copy of its own in the client's
    backlog, not a shared frame)."""
    if len(text) <= QUOTE_MAX:
        return repr(text)
    return f"{text[:QUOTE_MAX]!r} (the first {QUOTE_MAX} of {len(text):,} characters)"


class FrameError(SophiaError):
    """A frame the server cannot act on: answered with an error frame carrying `code`."""

    def __init__(self, code: str, detail: str, frame_id: Any = None) -> None:
        super().__init__(detail)
        self.code = code
        self.frame_id = frame_id


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's reader is: the stream's epoch and the sequence of the last event read."""

    epoch: str
    seq: int

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    id: Any
    channel: Any = None
    since: Position | None = None


def parse_request(data: str | bytes) -> Request:
    """One client frame; `FrameError` naming what is wrong (never anything else)."""
    if not isinstance(data, str):
        raise FrameError("bad_frame", "A frame is a text frame (UTF-8 JSON); this one is binary.")
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(
            "bad_frame", "A frame is one JSON object; this one is not valid JSON (or holds a lone surrogate)."
        ) from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "A frame is one JSON object.")
    frame_id = frame.get("id")
    if frame_id is not None and not (
        (isinstance(frame_id, int) and not isinstance(frame_id, bool) and abs(frame_id) < 2**53)
        or (isinstance(frame_id, str) and len(frame_id) <= MAX_ID_LENGTH)
    ):
        raise FrameError(
            "bad_frame", f"`id` is an integer or a string of at most {MAX_ID_LENGTH} characters."
        )
    op = frame.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise FrameError("unknown_op", f"`op` is one of {', '.join(sorted(OPS))}.", frame_id)
    unknown = sorted(set(frame) - OPS[op])
    if unknown:
        named = ", ".join(quoted(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise FrameError("bad_frame", f"Unknown field(s) for {op}: {named}{more}.", frame_id)
    since = frame.get("since")
    return Request(op, frame_id, frame.get("channel"), None if since is None else _position(since, frame_id))


def _position(since: Any, frame_id: Any) -> Position:
    if (
        not isinstance(since, dict)
        or set(since) != {"epoch", "seq"}
        or not isinstance(since["epoch"], str)
        or not 0 < len(since["epoch"]) <= MAX_EPOCH_LENGTH
        or not isinstance(since["seq"], int)
        or isinstance(since["seq"], bool)
        or not 0 <= since["seq"] < 2**63
    ):
        raise FrameError(
            "bad_position",
            '`since` is {"epoch": <string>, "seq": <integer >= 0>}, as a publication gave it.',
            frame_id,
        )
    return Position(since["epoch"], since["seq"])


def reply(kind: str, frame_id: Any = None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"type": kind}
    if frame_id is not None:
        body["id"] = frame_id
    body.update(fields)
    return orjson.dumps(body)


def error(code: str, detail: str, frame_id: Any = None) -> bytes:
    return reply("error", frame_id, code=code, detail=detail)


def publication(channel: str, epoch: str, seq: int, event: bytes) -> bytes:
    """A publication frame around the event's stored JSON bytes, without parsing them again."""
    head = orjson.dumps({"type": "publication", "channel": channel, "position": {"epoch": epoch, "seq": seq}})
    return head[:-1] + b',"event":' + event + b"}"
