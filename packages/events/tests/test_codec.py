from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from sophia.core.errors import Invalid
from sophia.core.event_types import EVENT_TYPES, example_envelope
from sophia.core.events import Envelope, uuid7
from sophia.events.codec import count_events, decode, decode_all, encode, unpack


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_example_round_trips_through_bytes(name):
    envelope = example_envelope(EVENT_TYPES[name])
    assert decode(encode(envelope)) == envelope


@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
        datetime(2026, 1, 15, 9, 30, 0, 1, tzinfo=UTC),
        datetime(2026, 1, 15, 9, 30, 0, 999999, tzinfo=UTC),
        datetime(2026, 1, 15, 4, 30, 0, 120000, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_encode_writes_the_same_document_as_as_dict(occurred_at):
    envelope = Envelope.new(
        "user.event", "u-1", {"name": "login", "n": 1.5, "ok": True}, source="webapp", occurred_at=occurred_at
    )
    assert orjson.loads(encode(envelope)) == envelope.as_dict()
    assert encode(envelope) == orjson.dumps(envelope.as_dict())
    assert decode(encode(envelope)) == envelope


def test_encoded_time_is_utc_with_z():
    envelope = Envelope.new(
        "system.event",
        "api",
        {"name": "deploy"},
        source="api",
        occurred_at=datetime(2026, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=1))),
    )
    assert b'"occurred_at":"2026-01-15T09:30:00Z"' in encode(envelope)


def test_encode_keeps_unicode_and_a_null_trace_id():
    envelope = Envelope.new("user.event", "ü-1", {"name": "café ☕"}, source="webapp")
    data = encode(envelope)
    assert "café ☕".encode() in data
    assert b'"trace_id":null' in data
    assert decode(data).payload == {"name": "café ☕"}


def test_decode_accepts_what_other_producers_may_send():
    data = orjson.dumps(
        {
            "id": str(uuid7(1_768_469_400_000, tail=7)),
            "type": "record.deleted",
            "schema_version": 1,
            "occurred_at": "2026-01-15T11:30:00.25+02:00",
            "source": "catalog",
            "key": "hubspot/deal/D-1",
            "payload": {},
        }
    )
    envelope = decode(data)
    assert envelope.occurred_at == datetime(2026, 1, 15, 9, 30, 0, 250000, tzinfo=UTC)
    assert envelope.trace_id is None


@pytest.mark.parametrize(
    "data", [b"", b"{", b"not json", b'{"id": 1,}', b"\xff\xfe", b'{"a": NaN}', b"[1, 2"]
)
def test_malformed_bytes_are_invalid_with_the_body_as_location(data):
    with pytest.raises(Invalid) as caught:
        decode(data)
    assert caught.value.detail == "The event is not valid JSON."
    assert [error.location for error in caught.value.errors] == [("body",)]


@pytest.mark.parametrize("data", [b"[]", b'"envelope"', b"null", b"42"])
def test_json_that_is_not_an_object_is_invalid(data):
    with pytest.raises(Invalid) as caught:
        decode(data)
    assert [(error.location, error.message) for error in caught.value.errors] == [
        (("body",), "must be a JSON object")
    ]


def test_a_json_object_that_is_not_an_envelope_names_the_fields():
    envelope = example_envelope(EVENT_TYPES["record.upserted"]).as_dict()
    del envelope["key"]
    envelope["schema_version"] = "1"
    with pytest.raises(Invalid) as caught:
        decode(orjson.dumps(envelope))
    assert {error.location for error in caught.value.errors} == {("body", "key"), ("body", "schema_version")}


def test_a_message_unpacks_into_its_lines_and_a_final_line_break_adds_no_event():
    first, second = (encode(Envelope.new("user.event", "u-1", {"n": n}, source="test")) for n in range(2))
    assert unpack(first) == [first]
    assert unpack(first + b"\n" + second) == [first, second]
    assert unpack(first + b"\n" + second + b"\n") == [first, second]  # NDJSON's last line break
    assert [envelope.payload["n"] for envelope in decode_all(first + b"\n" + second)] == [0, 1]


def test_an_empty_message_or_an_empty_line_is_an_invalid_envelope_not_none():
    assert unpack(b"") == [b""]
    with pytest.raises(Invalid):
        decode_all(b"")
    with pytest.raises(Invalid):
        decode_all(encode(Envelope.new("user.event", "u-1", {}, source="test")) + b"\n\n{}")


@pytest.mark.parametrize("data", [b"", b"{}", b"{}\n", b"{}\n{}", b"{}\n{}\n", b"{}\n\n{}", b"\n", b"\n\n"])
def test_counting_a_messages_events_agrees_with_unpacking_it(data):
    assert count_events(data) == len(unpack(data))
