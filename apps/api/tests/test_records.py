"""Contract of /api/v1/records: single writes with preconditions, deletes, reads and pages."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from app_clients import app_client
from problem_assertions import assert_problem

from sophia.api.records.schemas import RecordOut

NDJSON = {"content-type": "application/x-ndjson"}
OUTBOX_OF_KEY = "SELECT event_type, payload FROM sophia_core.outbox WHERE key = $1 ORDER BY id"


def new_source() -> str:
    return f"rec-{uuid.uuid4().hex[:12]}"


def path_of(source_system: str, kind: str = "deal", external_id: str = "r-1") -> str:
    return f"/api/v1/records/{source_system}/{kind}/{external_id}"


async def outbox_events(database, key: str) -> list[tuple[str, int]]:
    """(event_type, version in the payload) of every outbox row for `key`, oldest first."""
    async with database.connection() as connection:
        rows = await connection.fetch(OUTBOX_OF_KEY, key)
    return [(row["event_type"], row["payload"]["version"]) for row in rows]


async def write_many(client: httpx.AsyncClient, source_system: str, count: int) -> None:
    records = [
        {"source_system": source_system, "kind": "deal", "external_id": f"r-{i}", "data": {}}
        for i in range(count)
    ]
    body = b"\n".join(orjson.dumps(record) for record in records)
    response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text


async def list_records(client: httpx.AsyncClient, **params: object) -> dict:
    response = await client.get("/api/v1/records", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def listed_external_ids(client: httpx.AsyncClient, **params: object) -> list[str]:
    return [item["external_id"] for item in (await list_records(client, **params))["items"]]


async def test_put_creates_a_record_with_201_location_and_etag_1(client):
    source = new_source()
    response = await client.put(path_of(source), json={"data": {"amount": "10"}})
    assert response.status_code == 201
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert response.headers["location"] == f"/api/v1/records/{body['id']}"
    assert (body["source_system"], body["kind"], body["external_id"]) == (source, "deal", "r-1")
    assert (await client.get(response.headers["location"])).json() == body


async def test_put_replaces_an_existing_record_with_200_and_etag_2(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {"amount": "10"}})
    response = await client.put(path, json={"data": {"amount": "20"}})
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'
    assert "location" not in response.headers
    assert response.json()["data"] == {"amount": "20"}


async def test_put_replace_keeps_created_at_and_moves_updated_at(client):
    path = path_of(new_source())
    created = (await client.put(path, json={"data": {}, "created_at": "2024-01-02T03:04:05Z"})).json()
    replaced = (await client.put(path, json={"data": {"x": 1}, "created_at": "2025-01-01T00:00:00Z"})).json()
    assert created["created_at"] == replaced["created_at"] == "2024-01-02T03:04:05+00:00"
    assert replaced["updated_at"] > created["updated_at"]


async def test_put_with_stale_if_match_is_412_and_changes_nothing(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {"v": 1}})
    current = await client.put(path, json={"data": {"v": 2}})
    response = await client.put(path, json={"data": {"v": 3}}, headers={"If-Match": '"1"'})
    assert_problem(response, 412)
    assert (await client.get(f"/api/v1/records/{current.json()['id']}")).json()["data"] == {"v": 2}


async def test_put_with_matching_if_match_replaces(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {"v": 1}})
    response = await client.put(path, json={"data": {"v": 2}}, headers={"If-Match": '"1"'})
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'


async def test_put_with_if_match_on_a_missing_record_is_412(client):
    response = await client.put(path_of(new_source()), json={"data": {}}, headers={"If-Match": '"1"'})
    assert_problem(response, 412)


async def test_put_with_if_none_match_star_on_an_existing_record_is_412(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {}})
    assert_problem(await client.put(path, json={"data": {}}, headers={"If-None-Match": "*"}), 412)


async def test_put_with_if_none_match_star_on_a_new_record_creates_it(client):
    response = await client.put(path_of(new_source()), json={"data": {}}, headers={"If-None-Match": "*"})
    assert response.status_code == 201
    assert response.headers["etag"] == '"1"'


@pytest.mark.parametrize(
    ("header", "value"), [("If-Match", "banana"), ("If-Match", '"v1"'), ("If-None-Match", '"1"')]
)
async def test_put_with_an_unreadable_precondition_header_is_400(client, header, value):
    body = assert_problem(
        await client.put(path_of(new_source()), json={"data": {}}, headers={header: value}), 400
    )
    assert body["errors"][0]["location"] == ["header", header]


@pytest.mark.parametrize(
    ("source_system", "kind", "external_id", "parameter"),
    [
        ("HubSpot", "deal", "r-1", "source_system"),
        ("hubspot", "Deal", "r-1", "kind"),
        ("1hubspot", "deal", "r-1", "source_system"),
        ("hubspot", "deal", "x" * 257, "external_id"),
    ],
)
async def test_put_with_an_invalid_path_identifier_is_422(
    client, source_system, kind, external_id, parameter
):
    body = assert_problem(await client.put(path_of(source_system, kind, external_id), json={"data": {}}), 422)
    assert [error["location"] for error in body["errors"]] == [["path", parameter]]


async def test_put_accepts_an_external_id_of_exactly_256_characters(client):
    response = await client.put(path_of(new_source(), external_id="x" * 256), json={"data": {}})
    assert response.status_code == 201


async def test_put_with_an_unknown_body_field_is_422_naming_it(client):
    body = assert_problem(await client.put(path_of(new_source()), json={"data": {}, "colour": "red"}), 422)
    assert body["errors"][0]["location"] == ["body", "colour"]


@pytest.mark.parametrize("data", [[1, 2], "text", 5, None])
async def test_put_with_data_that_is_not_an_object_is_422(client, data):
    body = assert_problem(await client.put(path_of(new_source()), json={"data": data}), 422)
    assert body["errors"][0]["location"] == ["body", "data"]


async def test_every_write_adds_exactly_one_outbox_event_with_the_written_version(client, database):
    source = new_source()
    path = path_of(source)
    await client.put(path, json={"data": {}})
    await client.put(path, json={"data": {"v": 2}})
    await client.delete(path)
    events = await outbox_events(database, f"{source}/deal/r-1")
    assert events == [("record.upserted", 1), ("record.upserted", 2), ("record.deleted", 3)]


async def test_a_failed_precondition_adds_no_outbox_event(client, database):
    source = new_source()
    await client.put(path_of(source), json={"data": {}})
    await client.put(path_of(source), json={"data": {}}, headers={"If-Match": '"7"'})
    await client.put(path_of(source), json={"data": {}}, headers={"If-None-Match": "*"})
    assert await outbox_events(database, f"{source}/deal/r-1") == [("record.upserted", 1)]


async def test_delete_is_204_and_the_record_is_then_not_found(client):
    path = path_of(new_source())
    record_id = (await client.put(path, json={"data": {}})).json()["id"]
    response = await client.delete(path)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(f"/api/v1/records/{record_id}"), 404)


async def test_delete_of_a_deleted_record_is_404(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {}})
    await client.delete(path)
    assert_problem(await client.delete(path), 404)


async def test_delete_with_stale_if_match_is_412(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {}})
    await client.put(path, json={"data": {}})
    assert_problem(await client.delete(path, headers={"If-Match": '"1"'}), 412)


async def test_a_deleted_record_is_absent_from_lists(client):
    source = new_source()
    await client.put(path_of(source, external_id="kept"), json={"data": {}})
    await client.put(path_of(source, external_id="gone"), json={"data": {}})
    await client.delete(path_of(source, external_id="gone"))
    assert await listed_external_ids(client, source_system=source) == ["kept"]


async def test_put_after_delete_resurrects_the_record_at_the_next_version(client):
    path = path_of(new_source())
    record_id = (await client.put(path, json={"data": {}})).json()["id"]
    await client.delete(path)
    response = await client.put(path, json={"data": {"back": True}})
    assert response.status_code == 200
    assert response.headers["etag"] == '"3"'
    assert response.json()["id"] == record_id
    assert (await client.get(f"/api/v1/records/{record_id}")).json()["deleted_at"] is None


async def test_put_with_if_none_match_star_recreates_a_deleted_record(client):
    path = path_of(new_source())
    await client.put(path, json={"data": {}})
    await client.delete(path)
    response = await client.put(path, json={"data": {}}, headers={"If-None-Match": "*"})
    assert response.status_code in {200, 201}, response.text


async def test_get_returns_every_field_and_the_version_as_etag(client):
    source = new_source()
    path = path_of(source)
    await client.put(path, json={"data": {"a": 1}})
    record_id = (await client.put(path, json={"data": {"a": 2}})).json()["id"]
    response = await client.get(f"/api/v1/records/{record_id}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'
    body = response.json()
    assert body.keys() == RecordOut.model_fields.keys()
    assert [body["id"], body["source_system"], body["data"], body["version"]] == [
        record_id,
        source,
        {"a": 2},
        2,
    ]
    assert body["deleted_at"] is None


async def test_get_of_an_unknown_id_is_404_problem(client):
    assert_problem(await client.get(f"/api/v1/records/{uuid.uuid4()}"), 404)


async def test_get_of_a_non_uuid_id_is_422(client):
    body = assert_problem(await client.get("/api/v1/records/not-a-uuid"), 422)
    assert body["errors"][0]["location"] == ["path", "record_id"]


async def test_list_filters_by_source_system_and_kind(client):
    source = new_source()
    await client.put(path_of(source, "deal", "d-1"), json={"data": {}})
    await client.put(path_of(source, "contact", "c-1"), json={"data": {}})
    await client.put(path_of(new_source(), "deal", "d-1"), json={"data": {}})
    page = await list_records(client, source_system=source, kind="deal")
    assert [(item["source_system"], item["external_id"]) for item in page["items"]] == [(source, "d-1")]


async def test_list_filters_by_updated_since(client):
    source = new_source()
    await client.put(path_of(source, external_id="old"), json={"data": {}})
    newer = (await client.put(path_of(source, external_id="new"), json={"data": {}})).json()
    assert await listed_external_ids(client, source_system=source, updated_since=newer["updated_at"]) == [
        "new"
    ]


async def test_list_filters_by_equality_on_a_data_key_as_a_string_a_number_or_a_boolean(client):
    source = new_source()

    async def listed(**filters: str) -> list[str]:
        named = {f"data.{name}": value for name, value in filters.items()}
        return sorted(await listed_external_ids(client, source_system=source, **named))

    for external_id, data in {
        "open": {"stage": "open", "n": 5},
        "won": {"stage": "won", "n": 6, "big": True},
        "text": {"stage": "6", "n": "6", "big": "true"},
    }.items():
        await client.put(path_of(source, external_id=external_id), json={"data": data})
    assert await listed(stage="open") == ["open"]
    assert await listed(n="6") == ["text", "won"]  # the string "6", and the number it spells
    assert await listed(big="true") == ["text", "won"]
    assert await listed(n="6.0") == ["won"]  # numbers compare as numbers
    assert await listed(stage="won", n="5") == []


async def test_a_data_filter_is_answered_from_the_index_not_a_scan(database):
    from sophia.core.records import RecordFilter
    from sophia.database.catalog import CATALOG, filter_clauses

    args: list[object] = []
    clauses = filter_clauses(RecordFilter(None, None, None, (("dealstage", "won"),)), args)
    async with database.connection() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned anyway
        plan = await connection.fetch(
            f"EXPLAIN (FORMAT TEXT) SELECT c.id FROM {CATALOG} AS c WHERE {' AND '.join(clauses)}", *args
        )
    assert "catalog_data_path" in "\n".join(row[0] for row in plan)


async def test_a_list_query_past_its_time_limit_is_cancelled_and_answered_503(settings, api_keys, database):
    # The table's lock holds the query past any limit, however short.
    quick = settings.model_copy(update={"db_list_timeout_s": 0.05, "cache_enabled": False})
    async with (
        app_client(quick, api_keys["read"]) as reader,
        database.connection() as blocker,
        blocker.transaction(),
    ):
        await blocker.execute("LOCK TABLE sophia_core.unified_data_catalog IN ACCESS EXCLUSIVE MODE")
        response = await reader.get("/api/v1/records", params={"source_system": new_source()})
        problem = assert_problem(response, 503)
        assert "ran past its 0.05 s limit and was cancelled" in problem["detail"]
        assert response.headers["retry-after"] == "1"
    # an ordinary list at the usual limit (0.05 s could be a loaded machine's pause): answered
    after = await reader_get_ok(
        quick.model_copy(update={"db_list_timeout_s": settings.db_list_timeout_s}), api_keys
    )
    assert after == 200  # the connection was given back, not held


async def reader_get_ok(settings, api_keys) -> int:
    async with app_client(settings, api_keys["read"]) as reader:
        return (await reader.get("/api/v1/records", params={"limit": 1})).status_code


async def test_list_next_cursor_walks_every_record_exactly_once(client):
    source = new_source()
    await write_many(client, source, 7)
    seen: list[str] = []
    pages = 0
    params: dict[str, object] = {"source_system": source, "limit": 3}
    while True:
        page = await list_records(client, **params)
        pages += 1
        seen += [item["external_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(f"r-{i}" for i in range(7))
    assert pages == 3


@pytest.mark.parametrize("cursor_from", ["another filter", "nowhere"])
async def test_list_with_a_cursor_not_issued_for_this_filter_is_422_on_the_cursor(client, cursor_from):
    source = new_source()
    await write_many(client, source, 2)
    cursor = (await list_records(client, source_system=source, limit=1))["next_cursor"]
    if cursor_from == "nowhere":
        cursor = "not!a~cursor"
    params = {"source_system": source, "kind": "contact", "cursor": cursor}
    body = assert_problem(await client.get("/api/v1/records", params=params), 422)
    assert body["errors"][0]["location"] == ["query", "cursor"]


async def test_list_with_an_unknown_query_parameter_is_400_naming_it(client):
    body = assert_problem(await client.get("/api/v1/records", params={"colour": "red"}), 400)
    assert body["errors"][0]["location"] == ["query", "colour"]


async def test_list_limit_above_page_size_max_is_capped(client, settings):
    source = new_source()
    await write_many(client, source, settings.page_size_max + 1)
    page = await list_records(client, source_system=source, limit=settings.page_size_max * 10)
    assert len(page["items"]) == settings.page_size_max
    assert page["next_cursor"] is not None


async def test_if_match_and_if_none_match_together_are_refused(client):
    response = await client.put(
        f"/api/v1/records/{new_source()}/deal/r-1",
        json={"data": {}},
        headers={"If-Match": '"1"', "If-None-Match": "*"},
    )
    assert_problem(response, 400)


async def test_every_write_names_the_key_that_made_it_in_its_event_never_the_secret(
    client, database, api_keys
):
    source = new_source()
    prefix = api_keys["admin"].split("_")[1]
    await client.put(path_of(source), json={"data": {"a": 1}})
    line = orjson.dumps({"source_system": source, "kind": "deal", "external_id": "r-2", "data": {}})
    bulk = await client.post(
        "/api/v1/records:bulk", content=line + b"\n", headers={"Content-Type": "application/x-ndjson"}
    )
    assert bulk.status_code == 200
    await client.delete(path_of(source))
    async with database.connection() as connection:
        events = await connection.fetch(
            "SELECT event_type, payload FROM sophia_core.outbox "
            "WHERE payload->>'source_system' = $1 ORDER BY id",
            source,
        )
    assert [(row["event_type"], row["payload"]["actor"]) for row in events] == [
        ("record.upserted", f"key/{prefix}"),
        ("record.upserted", f"key/{prefix}"),
        ("record.deleted", f"key/{prefix}"),
    ]
    assert all(api_keys["admin"] not in orjson.dumps(row["payload"]).decode() for row in events)
