"""The events' fast check (`service.plain_event`) against the schema's validation (pydantic): whatever
the fast check accepts, the schema accepts too and leaves exactly the same fields; what it does not
accept goes to the schema, which decides and names what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_strategies import json_values as json_values_of
from pydantic import ValidationError

from sophia.api.events import service
from sophia.api.events.schemas import EVENT
from sophia.core.errors import Invalid
from sophia.core.events import uuid7

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=8))
json_values = json_values_of(json_scalars, key_size=5, max_leaves=6)
odd = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.text(max_size=6)
)


@st.composite
def moments(draw, wrong: bool) -> object:
    """RFC 3339 date-times with an offset; with `wrong`, also without one, with +24:00 or with
    seven digits of a second (pydantic refuses those)."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    offsets = ["Z", "+00:00", "+02:00", "-05:30", "+14:00"] + (["", "+24:00"] if wrong else [])
    offset = draw(st.sampled_from(offsets))
    digits = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6] + ([7] if wrong else [])))
    text = f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}{draw(st.integers(0, 9))}"[:digits]
    return text + offset


DROP = object()
"""A field left out of the event."""


def document(fields: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries(fields).map(
        lambda drawn: {name: value for name, value in drawn.items() if value is not DROP}
    )


def event_strategy(wrong: bool) -> st.SearchStrategy[dict[str, object]]:
    """Events in the shapes clients send; with `wrong`, each field now and then wrong or left out
    (so the fast check meets both), else every field valid (so it is held to its answers often)."""

    def mostly(
        valid: st.SearchStrategy[object], *bad: st.SearchStrategy[object]
    ) -> st.SearchStrategy[object]:
        if not wrong:
            return valid
        return st.integers(0, 9).flatmap(lambda roll: valid if roll else st.one_of(*bad, st.just(DROP)))

    ids = mostly(
        st.builds(lambda: str(uuid7())),
        st.builds(lambda: str(uuid7()) + "\n"),
        st.builds(lambda: str(uuid7()).upper()),
        st.uuids().map(str),
        odd,
    )
    sources = mostly(
        st.from_regex(r"[a-z][a-z0-9_\-]{0,62}", fullmatch=True),
        st.from_regex(r"[a-z][a-z0-9_\-]{63,70}", fullmatch=True),
        st.sampled_from(["Api", "a b", "x\n", ""]),
        odd,
    )
    texts = st.text(min_size=1, max_size=6)
    objects = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
    extras = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
    user_payloads = st.builds(
        lambda fields, extra: {**extra, **fields},
        document(
            {
                "name": mostly(texts, st.just(""), odd),
                "user_id": st.one_of(st.just(DROP), mostly(st.one_of(texts, st.none()), st.just(""), odd)),
                "properties": st.one_of(st.just(DROP), mostly(objects, odd)),
            }
        ),
        st.one_of(st.just({}), extras),
    )
    severities = st.sampled_from(["debug", "info", "warning", "error", None])
    system_payloads = st.builds(
        lambda fields, extra: {**extra, **fields},
        document(
            {
                "name": mostly(texts, st.just(""), odd),
                "severity": st.one_of(st.just(DROP), mostly(severities, st.just("loud"), odd)),
                "attributes": st.one_of(st.just(DROP), mostly(objects, odd)),
            }
        ),
        st.one_of(st.just({}), st.just({}), extras) if wrong else st.just({}),  # the schema forbids extras
    )
    return st.sampled_from(["user.event", "system.event"]).flatmap(
        lambda kind: st.builds(
            lambda fields, extra: {**fields, **extra},
            document(
                {
                    "type": mostly(st.just(kind), st.just("ml.prediction"), odd),
                    "key": mostly(texts, st.text(min_size=510, max_size=514), st.just(""), odd),
                    "id": st.one_of(st.just(DROP), st.none(), ids),
                    "occurred_at": st.one_of(st.just(DROP), st.none(), mostly(moments(wrong), odd)),
                    "source": st.one_of(st.just(DROP), sources),
                    "trace_id": st.one_of(
                        st.just(DROP),
                        mostly(
                            st.one_of(texts, st.none()), st.just(""), st.text(min_size=127, max_size=130), odd
                        ),
                    ),
                    "payload": mostly(system_payloads if kind == "system.event" else user_payloads, odd),
                }
            ),
            mostly(st.just({}), st.fixed_dictionaries({"extra": json_values})).filter(
                lambda extra: extra is not DROP
            ),
        )
    )


def schema_event(item: object) -> service.Event | None:
    try:
        model = EVENT.validate_python(item)
    except ValidationError:
        return None
    return service.Event(
        model.id, model.type, model.occurred_at, model.source, model.key, model.payload_dict(), model.trace_id
    )


def examples(count: int) -> settings:
    """A few examples in the fast tier; the load tier runs each property ten times as many."""
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


FAST, THOROUGH = examples(30), examples(300)


def check_the_fast_check_accepts_what_the_schema_accepts(item: object) -> None:
    fast = service.plain_event(item)
    if fast is not None:
        assert_same(fast, schema_event(item))


def check_a_valid_plain_event_takes_the_fast_path(item: object) -> None:
    schema = schema_event(item)
    assert schema is not None, item  # the strategy makes valid events only
    fast = service.plain_event(item)
    assert fast is not None, item
    assert_same(fast, schema)


@FAST
@given(event_strategy(wrong=True))
def test_what_the_fast_check_accepts_the_schema_accepts_the_same(item):
    check_the_fast_check_accepts_what_the_schema_accepts(item)


@pytest.mark.load
@THOROUGH
@given(event_strategy(wrong=True))
def test_what_the_fast_check_accepts_the_schema_accepts_the_same_thoroughly(item):
    check_the_fast_check_accepts_what_the_schema_accepts(item)


@FAST
@given(event_strategy(wrong=False))
def test_a_valid_event_in_a_plain_shape_takes_the_fast_path_to_the_same_fields(item):
    check_a_valid_plain_event_takes_the_fast_path(item)


@pytest.mark.load
@THOROUGH
@given(event_strategy(wrong=False))
def test_a_valid_event_in_a_plain_shape_takes_the_fast_path_to_the_same_fields_thoroughly(item):
    check_a_valid_plain_event_takes_the_fast_path(item)


def assert_same(fast: service.Event, schema: service.Event | None) -> None:
    assert schema is not None, "the fast check let through what the schema refuses"
    assert fast._replace(payload=None, occurred_at=None) == schema._replace(payload=None, occurred_at=None)
    assert orjson.dumps(fast.payload) == orjson.dumps(schema.payload)  # the same keys, in the same order
    assert fast.occurred_at == schema.occurred_at
    if fast.occurred_at is not None:
        assert fast.occurred_at.utcoffset() == schema.occurred_at.utcoffset()


PLAIN = [
    {"type": "user.event", "key": "u-1", "payload": {"name": "deal.viewed"}},
    {
        "id": str(uuid7()),
        "occurred_at": "2026-12-06T03:24:33.105739Z",
        "type": "user.event",
        "source": "bench",
        "key": "u-1",
        "payload": {"name": "deal.viewed", "user_id": "u-1", "properties": {"deal": "D-1"}, "extra": None},
        "trace_id": "t-1",
    },
    {"type": "system.event", "key": "sync", "payload": {"name": "sync.finished", "severity": "info"}},
    {
        "type": "system.event",
        "key": "k",
        "occurred_at": "2026-01-01T00:00:00+02:00",
        "payload": {"name": "x"},
    },
]


@pytest.mark.parametrize("item", PLAIN)
def test_the_shapes_clients_send_take_the_fast_path(item):
    fast = service.plain_event(item)
    assert fast is not None
    assert fast == schema_event(item)


def test_an_event_the_fast_check_leaves_to_the_schema_is_still_named_by_it():
    line = orjson.dumps({"type": "user.event", "key": "k", "payload": {"name": ""}})
    with pytest.raises(Invalid) as refused:
        service.parse_ndjson(orjson.dumps(PLAIN[0]) + b"\n" + line, 10)
    assert refused.value.errors[0].location == ("line", 2, "user.event", "payload", "name")
    assert "at least 1 character" in refused.value.errors[0].message
    moment = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    [event] = service.parse_json_array(orjson.dumps([PLAIN[3]]), 10)
    assert event.occurred_at == moment.astimezone(UTC)
