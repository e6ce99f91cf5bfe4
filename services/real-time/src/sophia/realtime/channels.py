"""The channels a client may subscribe to, which stream feeds each, who may read it, and which
channels an event belongs to.

| channel | events | scope |
| --- | --- | --- |
| `records` | every catalog change (`record.upserted`, `record.deleted`) | read |
| `records:<source_system>` | the changes of one source system | read |
| `records:<source_system>:<kind>` | of one kind of one source system | read |
| `deals` | the changes of records of kind `deal`, and `view.refreshed` of `active_deals_mv` | read |
| `analytics` | `analytics.updated`: the analytics summaries moved (their cached answers dropped) | read |
| `ml-predictions` | every model result written back | read |
| `system-events` | events of Sophia's and other systems | admin |
| `user-events:<user_id>` | what one user did (clients' events) | admin |
| `ops` | `ops.tick`: this process's own figures, every `SOPHIA_REALTIME_OPS_INTERVAL_S` | admin |

A position in a channel is its stream's: the event's place in it (its message's JetStream sequence
times 1,024, plus its index in the message: feed.py) and the stream's epoch (its creation time),
so every channel fed by one stream shares one order. `ops` is fed by no
stream but by the process itself (ops.py): its epoch names the process's ticker, and it keeps no
history to resume from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sophia.core.errors import FieldError, Forbidden, Invalid
from sophia.core.events import KEY_MAX_LENGTH
from sophia.core.records import IDENTIFIER_PATTERN
from sophia.database.verifier import SCOPE_RANK
from sophia.realtime.protocol import quoted

OPS = "ops"
"""The channel of the process's own figures (ops.py), fed by no stream."""

FAMILIES: dict[str, tuple[str | None, str]] = {
    "records": ("records", "read"),
    "deals": ("records", "read"),
    "analytics": ("records", "read"),
    "ml-predictions": ("ml-predictions", "read"),
    "system-events": ("system-events", "admin"),
    "user-events": ("user-events", "admin"),
    OPS: (None, "admin"),
}
"""Channel family -> (the stream that feeds it, unprefixed, None for none; the scope that may read it)."""

STREAMS = frozenset(stream for stream, _ in FAMILIES.values() if stream is not None)
"""The JetStream streams the service reads: one feed each."""
RECORD_CHANGES = frozenset({"record.upserted", "record.deleted"})
"""What the records channels carry (`record.reenrich` asks the models again: nothing changed)."""
RECORDS_STREAM_OTHERS: dict[str, tuple[str, ...]] = {
    "view.refreshed": ("deals",),  # beside the deal changes: `active_deals_mv` shows something new
    "analytics.updated": ("analytics",),  # the summaries moved: read the analytics again
}
"""The channels of the events of the records stream that are no record change."""

_SEGMENT = re.compile(IDENTIFIER_PATTERN)
USER_EVENTS = "user-events"
MAX_NAME_LENGTH = len(USER_EVENTS) + 1 + KEY_MAX_LENGTH
"""`user-events:<user>` for any user id the events API takes; the other families' names are made
of identifiers (a few dozen characters)."""


class UnknownChannel(Invalid):
    """A channel of no family this service serves (`Invalid` for a malformed one of a family)."""


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    family: str
    stream: str | None
    """The unprefixed stream that feeds it; None for `ops`, fed by the process itself."""
    scope: str

    def check_scope(self, scope: str) -> None:
        """`Forbidden` unless a key of `scope` may read this channel."""
        if SCOPE_RANK[scope] < SCOPE_RANK[self.scope]:
            raise Forbidden(
                f"Channel {quoted(self.name)} needs a key with the {self.scope!r} scope; "
                f"this key has {scope!r}."
            )


def parse_channel(name: object) -> Channel:
    """The channel called `name`; `Invalid` saying what is wrong with it."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise Invalid(
            "A channel is a name such as `records` or `records:hubspot:deal`.",
            [FieldError(("channel",), "not a channel name")],
        )
    family, colon, rest = name.partition(":")
    if family not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise UnknownChannel(
            f"Unknown channel {quoted(name)}: its family is one of {known}.",
            [FieldError(("channel",), "unknown")],
        )
    stream, scope = FAMILIES[family]
    if family == USER_EVENTS:  # the user id whole, `:` and all, as `channels_of` names it
        well_formed = 0 < len(rest) <= KEY_MAX_LENGTH and "\x00" not in rest
    else:
        segments = rest.split(":") if colon else []
        allowed = 2 if family == "records" else 0
        well_formed = len(segments) <= allowed and all(_SEGMENT.fullmatch(part) for part in segments)
    if not well_formed:
        raise Invalid(f"Malformed channel {quoted(name)}.", [FieldError(("channel",), "malformed")])
    return Channel(name, family, stream, scope)


def channels_of(stream: str, event: dict[str, Any]) -> list[str]:
    """The channels an event of `stream` (an envelope, parsed) is published on."""
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return []
    if stream == "records":
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return []
        if event_type not in RECORD_CHANGES:
            return list(RECORDS_STREAM_OTHERS.get(event_type, ()))
        source_system, kind = payload.get("source_system"), payload.get("kind")
        if not isinstance(source_system, str) or not isinstance(kind, str):
            return ["records"]
        names = ["records", f"records:{source_system}", f"records:{source_system}:{kind}"]
        return [*names, "deals"] if kind == "deal" else names
    if stream == "user-events":
        user = payload.get("user_id") or event.get("key")
        return [f"user-events:{user}"] if isinstance(user, str) else []
    if stream in STREAMS:
        return [stream]
    return []
