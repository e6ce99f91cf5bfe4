import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sophia.core.errors import Invalid
from sophia.core.event_types import EVENT_TYPES, example_envelope
from sophia.core.events import ENVELOPE_SCHEMA, Envelope, uuid7, uuid7_time_ms

SOME_MS = 1_768_469_400_000  # 2026-01-15T09:30:00Z
RECORD_ID = "019b8a31-5c20-7d4e-9a51-6f0d2e8b4c17"
VALID = {
    "id": "019bc0fd-89c0-7000-8000-00000000002a",
    "type": "record.upserted",
    "schema_version": 1,
    "occurred_at": "2026-01-15T09:30:00.123456Z",
    "source": "catalog",
    "key": "hubspot/deal/D-1001",
    "payload": {"id": RECORD_ID, "version": 2},
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
}


def locations(caught: pytest.ExceptionInfo[Invalid]) -> dict[tuple[str | int, ...], str]:
    return {error.location: error.message for error in caught.value.errors}


def test_uuid7_has_version_7_variant_10_and_the_timestamp_in_the_top_48_bits():
    value = uuid7(SOME_MS)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 62 & 0b11 == 0b10
    assert value.int >> 80 == SOME_MS
    assert uuid7_time_ms(value) == SOME_MS
    assert str(value).startswith("019bc0fd-89c0-7")


def test_uuid7_defaults_to_now():
    before = datetime.now(UTC).timestamp() * 1000
    made = uuid7_time_ms(uuid7())
    after = datetime.now(UTC).timestamp() * 1000
    assert before - 1 <= made <= after + 1


def test_uuid7_fills_the_other_74_bits_at_random():
    values = {uuid7(SOME_MS) for _ in range(1000)}
    assert len(values) == 1000
    rand_a = {value.int >> 64 & 0xFFF for value in values}
    assert len(rand_a) > 100


def test_uuid7_sorts_by_time_as_text_and_as_bytes():
    made = [uuid7(ms) for ms in (SOME_MS + 2, SOME_MS, SOME_MS + 1, 0, 2**48 - 1)]
    by_time = sorted(made, key=uuid7_time_ms)
    assert sorted(made) == by_time
    assert sorted(made, key=str) == by_time
    assert sorted(made, key=lambda value: value.bytes) == by_time


def test_uuid7_with_a_tail_is_the_same_every_time():
    first = uuid7(SOME_MS, tail=42)
    assert first == uuid7(SOME_MS, tail=42)
    assert str(first) == "019bc0fd-89c0-7000-8000-00000000002a"
    assert first.int >> 64 & 0xFFF == 0  # rand_a
    assert first.int & (2**62 - 1) == 42  # rand_b
    assert uuid7(SOME_MS, tail=2**62 - 1).int & (2**62 - 1) == 2**62 - 1
    assert uuid7(SOME_MS, tail=43) != first
    assert uuid7(SOME_MS + 1, tail=42) != first


@pytest.mark.parametrize(("unix_ms", "tail"), [(-1, None), (2**48, None), (0, -1), (0, 2**62)])
def test_uuid7_refuses_what_does_not_fit_its_bits(unix_ms, tail):
    with pytest.raises(ValueError, match="must be in"):
        uuid7(unix_ms, tail=tail)


def test_uuid7_time_of_another_version_is_an_error():
    with pytest.raises(ValueError, match="not a UUIDv7"):
        uuid7_time_ms(uuid.uuid4())


def test_envelope_round_trips_through_its_dict_and_json():
    envelope = Envelope.from_dict(VALID)
    assert envelope.occurred_at == datetime(2026, 1, 15, 9, 30, 0, 123456, tzinfo=UTC)
    assert envelope.as_dict() == VALID
    assert Envelope.from_dict(json.loads(json.dumps(envelope.as_dict()))) == envelope


def test_as_dict_writes_utc_with_z_and_microseconds_only_when_there_are_some():
    envelope = Envelope.from_dict({**VALID, "occurred_at": "2026-01-15T09:30:00+00:00"})
    assert envelope.as_dict()["occurred_at"] == "2026-01-15T09:30:00Z"


def test_from_dict_moves_other_offsets_to_utc():
    envelope = Envelope.from_dict({**VALID, "occurred_at": "2026-01-15T11:30:00.5+02:00"})
    assert envelope.occurred_at == datetime(2026, 1, 15, 9, 30, 0, 500000, tzinfo=UTC)
    assert envelope.occurred_at.tzinfo is UTC
    assert envelope.as_dict()["occurred_at"] == "2026-01-15T09:30:00.500000Z"


def test_trace_id_may_be_missing_or_null():
    without = {name: value for name, value in VALID.items() if name != "trace_id"}
    assert Envelope.from_dict(without).trace_id is None
    assert Envelope.from_dict({**VALID, "trace_id": None}).trace_id is None


@pytest.mark.parametrize("field", ["id", "type", "schema_version", "occurred_at", "source", "key", "payload"])
def test_from_dict_names_each_missing_field(field):
    data = {name: value for name, value in VALID.items() if name != field}
    with pytest.raises(Invalid) as caught:
        Envelope.from_dict(data)
    assert locations(caught) == {("body", field): "required"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", 42, "must be a string"),
        ("id", "not-a-uuid", "must be a UUIDv7, lowercase and hyphenated"),
        ("id", "a70848f2-742b-41b3-abfe-a6757a5dcb1c", "must be a UUIDv7, lowercase and hyphenated"),
        ("id", VALID["id"].upper(), "must be a UUIDv7, lowercase and hyphenated"),
        ("id", "019bc0fd-89c0-7000-c000-00000000002a", "must be a UUIDv7, lowercase and hyphenated"),
        ("type", "", "must not be empty"),
        ("type", "upserted", "must be dotted lowercase words, e.g. record.upserted"),
        ("type", "Record.Upserted", "must be dotted lowercase words, e.g. record.upserted"),
        ("type", ["record.upserted"], "must be a string"),
        ("schema_version", "1", "must be an integer"),
        ("schema_version", 1.0, "must be an integer"),
        ("schema_version", True, "must be an integer"),
        ("schema_version", 0, "must be at least 1"),
        ("occurred_at", "2026-01-15T09:30:00", "must carry a UTC offset (naive date-times are ambiguous)"),
        ("occurred_at", "2026-01-15", "must carry a UTC offset (naive date-times are ambiguous)"),
        ("occurred_at", "yesterday", "must be an ISO 8601 date-time"),
        ("occurred_at", 1768469400, "must be a string"),
        ("source", "HubSpot", "must be a lowercase identifier (a letter, then letters, digits, _ or -)"),
        ("source", "a" * 64, "must be a lowercase identifier (a letter, then letters, digits, _ or -)"),
        ("key", "", "must not be empty"),
        ("key", None, "must be a string"),
        ("payload", [], "must be a JSON object"),
        ("payload", "{}", "must be a JSON object"),
        ("trace_id", "", "must not be empty"),
        ("trace_id", 7, "must be a string"),
        ("trace_id", "x" * 129, "must be at most 128 characters"),
    ],
)
def test_from_dict_names_the_field_that_is_wrong_and_how(field, value, message):
    with pytest.raises(Invalid) as caught:
        Envelope.from_dict({**VALID, field: value})
    assert locations(caught) == {("body", field): message}


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(Invalid) as caught:
        Envelope.from_dict({**VALID, "partition": 3})
    assert locations(caught) == {("body", "partition"): "unknown field"}


def test_from_dict_reports_every_problem_at_once():
    with pytest.raises(Invalid) as caught:
        Envelope.from_dict({"id": "nope", "type": "x.y", "extra": 1})
    assert set(locations(caught)) == {
        ("body", "extra"),
        ("body", "id"),
        ("body", "schema_version"),
        ("body", "occurred_at"),
        ("body", "source"),
        ("body", "key"),
        ("body", "payload"),
    }


@pytest.mark.parametrize("data", [[], "envelope", None, 3])
def test_from_dict_of_something_not_an_object_is_invalid(data):
    with pytest.raises(Invalid) as caught:
        Envelope.from_dict(data)
    assert locations(caught) == {("body",): "must be a JSON object"}


def test_new_gives_a_fresh_uuid7_now_in_utc_and_version_1():
    before = datetime.now(UTC)
    envelope = Envelope.new("user.event", "u-1", {"name": "login"}, source="webapp")
    after = datetime.now(UTC)
    assert before <= envelope.occurred_at <= after
    assert envelope.occurred_at.tzinfo is UTC
    assert envelope.schema_version == 1
    assert envelope.trace_id is None
    made = uuid.UUID(envelope.id)
    assert made.version == 7
    assert str(made) == envelope.id
    assert uuid7_time_ms(made) == (envelope.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    assert Envelope.new("user.event", "u-1", {"name": "login"}, source="webapp").id != envelope.id


def test_new_keeps_what_it_is_given_and_copies_the_payload():
    payload = {"name": "deploy"}
    at = datetime(2026, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    envelope = Envelope.new(
        "system.event", "api", payload, source="api", schema_version=2, trace_id="abc", occurred_at=at
    )
    payload["name"] = "changed"
    assert envelope.payload == {"name": "deploy"}
    assert envelope.occurred_at == at
    assert envelope.occurred_at.tzinfo is UTC
    assert (envelope.type, envelope.key, envelope.source) == ("system.event", "api", "api")
    assert (envelope.schema_version, envelope.trace_id) == (2, "abc")
    assert Envelope.from_dict(envelope.as_dict()) == envelope


def test_new_refuses_arguments_that_from_dict_would_refuse():
    with pytest.raises(Invalid) as caught:
        Envelope.new(
            "Nope",
            "",
            {},
            source="Not An Identifier",
            schema_version=0,
            trace_id="",
            occurred_at=datetime(2026, 1, 15),
        )
    assert set(locations(caught)) == {
        ("type",),
        ("key",),
        ("source",),
        ("schema_version",),
        ("trace_id",),
        ("occurred_at",),
    }


def test_an_envelope_built_directly_is_kept_in_utc_and_never_naive():
    at = datetime(2026, 1, 15, 4, 30, tzinfo=timezone(timedelta(hours=-5)))
    envelope = Envelope(VALID["id"], "record.upserted", 1, at, "catalog", "k", {})
    assert envelope.occurred_at.tzinfo is UTC
    assert envelope.as_dict()["occurred_at"] == "2026-01-15T09:30:00Z"
    with pytest.raises(Invalid) as caught:
        Envelope(VALID["id"], "record.upserted", 1, datetime(2026, 1, 15), "catalog", "k", {})
    assert set(locations(caught)) == {("occurred_at",)}


def test_the_registry_covers_every_stream_and_names_each_type_by_its_key():
    assert {name: event.stream for name, event in EVENT_TYPES.items()} == {
        "record.upserted": "records",
        "record.deleted": "records",
        "record.reenrich": "records",
        "view.refreshed": "records",
        "analytics.updated": "records",
        "user.event": "user-events",
        "system.event": "system-events",
        "ml.prediction": "ml-predictions",
        "audit.entry": "audit-logs",
    }
    assert all(name == event.name for name, event in EVENT_TYPES.items())


def test_record_payloads_are_exactly_what_the_outbox_writes():
    for name in ("record.upserted", "record.deleted", "record.reenrich"):
        schema = EVENT_TYPES[name].payload_schema
        assert set(schema["required"]) == {"id", "source_system", "kind", "external_id", "version"}
        assert set(schema["properties"]) == {*schema["required"], "actor"}  # who wrote, when a key did
        assert schema["additionalProperties"] is False


def test_examples_are_valid_envelopes_that_round_trip():
    ids = set()
    for event_type in EVENT_TYPES.values():
        example = example_envelope(event_type)
        assert example == example_envelope(event_type)
        assert example.type == event_type.name
        assert Envelope.from_dict(example.as_dict()) == example
        ids.add(example.id)
    assert len(ids) == len(EVENT_TYPES)


jsonschema_rs = pytest.importorskip("jsonschema_rs")


def validator(schema):
    jsonschema_rs.meta.validate(schema)
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


def test_every_schema_is_valid_draft_2020_12_and_its_example_conforms():
    envelope = validator(dict(ENVELOPE_SCHEMA))
    for event_type in EVENT_TYPES.values():
        example = example_envelope(event_type).as_dict()
        envelope.validate(example)
        validator(dict(event_type.payload_schema)).validate(example["payload"])


def test_envelope_schema_agrees_with_from_dict():
    envelope = validator(dict(ENVELOPE_SCHEMA))
    assert envelope.is_valid(VALID)
    for field, value in [
        ("id", "a70848f2-742b-41b3-abfe-a6757a5dcb1c"),
        ("schema_version", 0),
        ("source", "HubSpot"),
        ("occurred_at", "2026-01-15T09:30:00"),
        ("trace_id", ""),
        ("unknown", 1),
    ]:
        data = {**VALID, field: value}
        assert not envelope.is_valid(data), field
        with pytest.raises(Invalid):
            Envelope.from_dict(data)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("record.upserted", {"id": "x", "source_system": "a", "kind": "b", "external_id": "c", "version": 1}),
        ("record.upserted", {"id": RECORD_ID, "source_system": "a", "kind": "b", "external_id": "c"}),
        ("record.deleted", {**EVENT_TYPES["record.deleted"].example, "version": 0}),
        ("record.deleted", {**EVENT_TYPES["record.deleted"].example, "data": {}}),
        ("user.event", {"user_id": "u-1"}),
        ("user.event", {"name": "x", "properties": []}),
        ("system.event", {"name": "x", "severity": "fatal"}),
        ("system.event", {"name": "x", "extra": 1}),
        ("ml.prediction", {**EVENT_TYPES["ml.prediction"].example, "task": "translation"}),
        ("audit.entry", {**EVENT_TYPES["audit.entry"].example, "at": "yesterday"}),
        ("analytics.updated", {**EVENT_TYPES["analytics.updated"].example, "deals": -1}),
        ("analytics.updated", {"as_of": "2026-01-15T09:30:00Z", "deals": 1}),
    ],
)
def test_payload_schemas_refuse_what_their_type_does_not_allow(name, payload):
    assert not validator(dict(EVENT_TYPES[name].payload_schema)).is_valid(payload)


def test_user_events_allow_extra_fields_other_fixed_payloads_do_not():
    assert validator(dict(EVENT_TYPES["user.event"].payload_schema)).is_valid({"name": "x", "page": "/deals"})
