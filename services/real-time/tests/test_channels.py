"""Which channels an event is published on, and what each channel family is fed by."""

from __future__ import annotations

from typing import Any

import pytest

from sophia.core.errors import Invalid
from sophia.realtime.channels import STREAMS, channels_of, parse_channel

RECORD = {"id": "r-1", "source_system": "crm", "external_id": "x-1", "version": 1}


def envelope(event_type: Any, payload: Any, key: str = "k") -> dict[str, Any]:
    return {"type": event_type, "key": key, "payload": payload}


@pytest.mark.parametrize(
    ("stream", "event", "channels"),
    [
        (
            "records",
            envelope("record.upserted", {**RECORD, "kind": "deal"}),
            ["records", "records:crm", "records:crm:deal", "deals"],
        ),
        (
            "records",
            envelope("record.deleted", {**RECORD, "kind": "note"}),
            ["records", "records:crm", "records:crm:note"],
        ),
        ("records", envelope("record.reenrich", {**RECORD, "kind": "deal"}), []),
        (
            "records",
            envelope("view.refreshed", {"view": "active_deals_mv", "at": "2026-01-15T09:30:00Z"}),
            ["deals"],
        ),
        (
            "records",
            envelope("analytics.updated", {"as_of": "2026-01-15T09:30:00Z", "deals": 2, "conversations": 0}),
            ["analytics"],
        ),
        ("records", envelope("analytics.updated", "not an object"), []),
        ("records", envelope(["analytics.updated"], {}), []),
        ("records", envelope("ops.tick", {}), []),
        ("ml-predictions", envelope("ml.prediction", {"record_id": "r-1"}), ["ml-predictions"]),
        ("system-events", envelope("system.event", {"name": "deploy"}), ["system-events"]),
        ("user-events", envelope("user.event", {"name": "clicked"}, key="u-1"), ["user-events:u-1"]),
    ],
)
def test_an_event_is_published_on_the_channels_of_its_stream_and_type(stream, event, channels):
    assert channels_of(stream, event) == channels


def test_analytics_is_fed_by_records_and_ops_by_no_stream_for_admins_only():
    assert {"records", "ml-predictions", "system-events", "user-events"} == STREAMS  # one feed each
    analytics, ops = parse_channel("analytics"), parse_channel("ops")
    assert (analytics.stream, analytics.scope) == ("records", "read")
    assert (ops.family, ops.stream, ops.scope) == ("ops", None, "admin")


@pytest.mark.parametrize("name", ["ops:x", "analytics:crm"])
def test_ops_and_analytics_take_no_segments(name):
    with pytest.raises(Invalid, match="Malformed channel"):
        parse_channel(name)
