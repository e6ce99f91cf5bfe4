"""POST /api/v1/events against real NATS: 202 only once JetStream has every event; bad input 4xx."""

from __future__ import annotations

import orjson
import pytest
from app_clients import app_client
from nats.js.errors import NotFoundError
from problem_assertions import assert_problem

from sophia.core.documents import MAX_DEPTH, nesting_possible
from sophia.core.events import uuid7
from sophia.events.codec import decode_all
from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


def user_event(key: str = "u-1", **overrides) -> dict:
    return {"type": "user.event", "key": key, "payload": {"name": "deal.viewed", "user_id": key}, **overrides}


async def stored(client, stream: str) -> list:
    js = await client.nats.jetstream()
    name = client.specs[stream].name
    info = await js.stream_info(name)
    return [  # a message carries one or several events (codec.unpack)
        envelope
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
        for envelope in decode_all((await js.get_msg(name, seq)).data)
    ]


async def test_a_json_batch_is_accepted_once_jetstream_holds_every_event(events_client):
    system = {"type": "system.event", "key": "sync", "payload": {"name": "sync.finished", "severity": "info"}}
    response = await events_client.post("/api/v1/events", json=[user_event("u-1"), user_event("u-2"), system])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3
    users = await stored(events_client, "user-events")
    assert [e.id for e in users] == body["ids"][:2]
    assert [e.key for e in users] == ["u-1", "u-2"]
    assert users[0].payload == {"name": "deal.viewed", "user_id": "u-1", "properties": {}}
    assert users[0].source == "api"
    assert users[0].trace_id  # the request id, when the client sends none
    assert [e.type for e in await stored(events_client, "system-events")] == ["system.event"]


async def test_ndjson_works_and_resending_the_same_ids_adds_nothing(events_client):
    ids = [str(uuid7()) for _ in range(3)]
    lines = b"".join(orjson.dumps(user_event(f"u-{n}", id=ids[n])) + b"\n" for n in range(3))
    for _ in range(2):
        response = await events_client.post("/api/v1/events", content=lines, headers=NDJSON)
        assert response.status_code == 202, response.text
        assert response.json()["ids"] == ids
    assert [e.id for e in await stored(events_client, "user-events")] == ids


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            [user_event(), {"type": "user.event", "key": "u", "payload": {}}],
            ["body", 1, "user.event", "payload", "name"],
        ),
        ([{"type": "ml.prediction", "key": "k", "payload": {}}], ["body", 0]),
        ([user_event(extra=1)], ["body", 0, "user.event", "extra"]),
        (  # longer than any channel names a user (`user-events:<user_id>`, docs/realtime.md)
            [{"type": "user.event", "key": "u", "payload": {"name": "x", "user_id": "u" * 513}}],
            ["body", 0, "user.event", "payload", "user_id"],
        ),
        ([user_event(id="not-a-uuid")], ["body", 0, "user.event", "id"]),
        ([user_event(occurred_at="2026-01-01T00:00:00")], ["body", 0, "user.event", "occurred_at"]),
        (
            [{"type": "system.event", "key": "k", "payload": {"name": "x", "severity": "loud"}}],
            ["body", 0, "system.event", "payload", "severity"],
        ),
        ([], ["body"]),
        ({"type": "user.event"}, ["body"]),
    ],
)
async def test_a_bad_event_is_a_422_naming_it_and_nothing_is_published(events_client, body, where):
    response = await events_client.post("/api/v1/events", json=body)
    problem = assert_problem(response, 422)
    assert any(error["location"][: len(where)] == where for error in problem["errors"]), problem
    js = await events_client.nats.jetstream()
    with pytest.raises(NotFoundError):  # nothing was published, so not even the streams exist
        await js.stream_info(events_client.specs["user-events"].name)


async def test_a_large_shallow_batch_is_spared_the_depth_walk_and_one_deep_payload_is_still_refused(
    events_client,
):
    properties = {"tags": ["a", "b"], "page": {"path": "/deals/[id]"}}
    batch = [
        user_event(f"u-{n}", payload={"name": "deal.viewed", "properties": properties}) for n in range(1_000)
    ]
    body = orjson.dumps(batch)
    assert body.count(b"[") + body.count(b"{") > 10 * MAX_DEPTH  # many brackets, none of them deep
    assert not nesting_possible(body)  # so the service never walks this batch's payloads
    response = await events_client.post("/api/v1/events", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1_000

    deep: list = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    batch[500] = user_event("deep", payload={"name": "x", "deep": deep})
    response = await events_client.post("/api/v1/events", content=orjson.dumps(batch), headers=JSON)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["body", 500, "payload"]
    assert f"nested deeper than {MAX_DEPTH} levels" in problem["detail"]
    assert (
        len(await stored(events_client, "user-events")) == 1_000
    )  # the first batch only: nothing of the refused one


async def test_a_bad_ndjson_line_is_named_by_its_number(events_client):
    lines = orjson.dumps(user_event()) + b"\n{oops\n"
    problem = assert_problem(await events_client.post("/api/v1/events", content=lines, headers=NDJSON), 422)
    assert problem["errors"][0]["location"] == ["line", 2]


async def test_too_many_events_and_other_media_types_are_refused(settings, api_keys, events_client):
    async with app_client(settings.model_copy(update={"events_max_batch": 2}), api_keys["write"]) as small:
        response = await small.post("/api/v1/events", json=[user_event()] * 3)
    assert "at most 2 events" in assert_problem(response, 422)["detail"]
    response = await events_client.post(
        "/api/v1/events", content=b"x", headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415)


async def test_a_read_key_may_not_send_events(client, api_keys):
    response = await client.post(
        "/api/v1/events", json=[user_event()], headers={"Authorization": f"Bearer {api_keys['read']}"}
    )
    assert_problem(response, 403)


@pytest.mark.parametrize("refuse_at", [0.05, 1.0], ids=["refused-before-full", "refused-by-jetstream"])
async def test_a_full_stream_answers_503_with_retry_after_and_loses_no_accepted_event(
    own_streams, api_keys, refuse_at
):
    """A 1 MiB stream: batches are accepted until it fills, then refused; every accepted id is kept."""
    tiny = own_streams.model_copy(
        update={"events_max_bytes": 1024 * 1024, "events_backpressure_fill": refuse_at}
    )
    filler = {"name": "big", "properties": {"blob": "x" * 4000}}
    accepted: list[str] = []
    refused = None
    async with app_client(tiny, api_keys["write"]) as client, NatsConnection(tiny.nats_url) as nats:
        for _ in range(100):
            batch = [user_event(f"u-{n}", payload=filler) for n in range(20)]
            response = await client.post("/api/v1/events", json=batch)
            if response.status_code != 202:
                refused = response
                break
            accepted += response.json()["ids"]
        assert refused is not None, "a 1 MiB stream took 8 MiB"
        problem = assert_problem(refused, 503)
        assert int(refused.headers["retry-after"]) >= 1
        assert len(problem["ids"]) == 20  # what to send again, with these ids: nothing twice
        js = await nats.jetstream()
        name = stream_specs(tiny)["user-events"].name
        info = await js.stream_info(name)
        kept = {
            envelope.id
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
            for envelope in decode_all((await js.get_msg(name, seq)).data)
        }
    assert set(accepted) <= kept
    assert accepted


async def test_a_payload_postgres_cannot_store_is_refused(events_client):
    response = await events_client.post("/api/v1/events", json=[user_event(payload={"name": "x\u0000y"})])
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["body", 0, "payload"]
    response = await events_client.post("/api/v1/events", json=[user_event(), user_event(key="k\u0000")])
    assert assert_problem(response, 422)["errors"][0]["location"] == ["body", 1, "key"]


async def test_text_that_only_looks_like_an_escaped_nul_is_accepted(events_client):
    """A backslash followed by `u0000` is ordinary text: the cheap scan's hit is checked properly."""
    response = await events_client.post("/api/v1/events", json=[user_event(payload={"name": "a\\u0000b"})])
    assert response.status_code == 202, response.text
    [stored_event] = await stored(events_client, "user-events")
    assert stored_event.payload["name"] == "a\\u0000b"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "user.event", "key": "k", "payload": {"name": "n", "properties": {"x": NaN}}}',
        b'{"type": "user.event", "key": "k", "payload": {"name": "n", "properties": {"x": Infinity}}}',
        b'{"type": "user.event", "key": "k", "payload": {"name": "n\\u0000"}}',
    ],
    ids=["nan", "infinity", "nul"],
)
async def test_an_ndjson_line_postgres_cannot_store_is_named_and_nothing_is_published(events_client, line):
    body = orjson.dumps(user_event()) + b"\n" + line + b"\n"
    problem = assert_problem(await events_client.post("/api/v1/events", content=body, headers=NDJSON), 422)
    assert problem["errors"][0]["location"][:2] == ["line", 2]
    js = await events_client.nats.jetstream()
    with pytest.raises(NotFoundError):
        await js.stream_info(events_client.specs["user-events"].name)


async def test_a_line_that_is_not_json_says_so(events_client):
    body = orjson.dumps(user_event()) + b"\n" + orjson.dumps(user_event()) + b"\n[1, \n"
    problem = assert_problem(await events_client.post("/api/v1/events", content=body, headers=NDJSON), 422)
    assert problem["detail"].startswith("Line 3 is not valid JSON")
    assert problem["errors"][0]["location"] == ["line", 3]
