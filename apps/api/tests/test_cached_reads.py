"""GET /api/v1/records/{id} through the tiered cache: hits, validators, and invalidation by writes."""

import asyncio
import uuid

import httpx
import pytest
from app_clients import app_client
from live_server import live_server

NDJSON = {"content-type": "application/x-ndjson"}


def new_source() -> str:
    return f"cache-{uuid.uuid4().hex[:12]}"


async def put(client: httpx.AsyncClient, source: str, external_id: str, data: dict) -> dict:
    response = await client.put(f"/api/v1/records/{source}/deal/{external_id}", json={"data": data})
    assert response.status_code in (200, 201), response.text
    return response.json()


async def change_behind_the_apis_back(database, record_id: str, data: str) -> None:
    async with database.connection() as connection:
        await connection.execute(
            "UPDATE sophia_core.unified_data_catalog SET data = $2::jsonb WHERE id = $1",
            uuid.UUID(record_id),
            data,
        )


async def test_a_second_read_is_served_from_the_cache_without_the_database(client, database):
    record = await put(client, new_source(), "r-1", {"stage": "open"})
    first = await client.get(f"/api/v1/records/{record['id']}")
    await change_behind_the_apis_back(database, record["id"], '{"stage": "changed in SQL"}')
    second = await client.get(f"/api/v1/records/{record['id']}")
    assert second.status_code == 200
    assert second.content == first.content
    assert second.json()["data"] == {"stage": "open"}


async def test_a_write_through_the_api_invalidates_the_cached_record(client, database):
    source = new_source()
    record = await put(client, source, "r-1", {"stage": "open"})
    assert (await client.get(f"/api/v1/records/{record['id']}")).json()["version"] == 1
    await put(client, source, "r-1", {"stage": "won"})
    again = await client.get(f"/api/v1/records/{record['id']}")
    assert again.json()["data"] == {"stage": "won"}
    assert again.headers["etag"] == '"2"'


async def test_the_etag_is_the_version_and_if_none_match_gives_304_with_the_validators(client):
    record = await put(client, new_source(), "r-1", {"a": 1})
    url = f"/api/v1/records/{record['id']}"
    first = await client.get(url)
    assert first.headers["etag"] == '"1"'
    assert first.headers["cache-control"] == "private, max-age=60"
    not_modified = await client.get(url, headers={"If-None-Match": '"1"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == '"1"'
    assert (await client.get(url, headers={"If-None-Match": 'W/"1", "9"'})).status_code == 304
    assert (await client.get(url, headers={"If-None-Match": '"2"'})).status_code == 200


async def test_a_delete_invalidates_the_cached_record(client):
    source = new_source()
    record = await put(client, source, "r-1", {"a": 1})
    assert (await client.get(f"/api/v1/records/{record['id']}")).status_code == 200
    assert (await client.delete(f"/api/v1/records/{source}/deal/r-1")).status_code == 204
    assert (await client.get(f"/api/v1/records/{record['id']}")).status_code == 404


async def test_a_bulk_update_invalidates_exactly_the_records_it_changed(client, database):
    source = new_source()
    changed = await put(client, source, "r-1", {"v": 1})
    untouched = await put(client, source, "r-2", {"v": 1})
    for record in (changed, untouched):
        await client.get(f"/api/v1/records/{record['id']}")
    await change_behind_the_apis_back(database, untouched["id"], '{"v": "changed in SQL"}')
    line = f'{{"source_system":"{source}","kind":"deal","external_id":"r-1","data":{{"v":2}}}}\n'
    assert (await client.post("/api/v1/records:bulk", content=line, headers=NDJSON)).status_code == 200
    assert (await client.get(f"/api/v1/records/{changed['id']}")).json()["data"] == {"v": 2}
    assert (await client.get(f"/api/v1/records/{untouched['id']}")).json()["data"] == {"v": 1}  # still cached


async def test_a_bulk_update_too_large_to_name_drops_every_cached_record(settings, api_keys, database):
    async with app_client(
        settings.model_copy(update={"cache_invalidate_max_keys": 1}), api_keys["admin"]
    ) as client:
        source = new_source()
        records = [await put(client, source, f"r-{n}", {"v": 1}) for n in range(3)]
        bystander = await put(client, new_source(), "b-1", {"v": 1})
        for record in [*records, bystander]:
            await client.get(f"/api/v1/records/{record['id']}")
        await change_behind_the_apis_back(database, bystander["id"], '{"v": "changed in SQL"}')
        lines = "".join(
            f'{{"source_system":"{source}","kind":"deal","external_id":"r-{n}","data":{{"v":2}}}}\n'
            for n in range(2)
        )
        result = await client.post("/api/v1/records:bulk", content=lines, headers=NDJSON)
        assert result.json()["updated"] == 2
        assert (await client.get(f"/api/v1/records/{records[0]['id']}")).json()["data"] == {"v": 2}
        reread = await client.get(f"/api/v1/records/{bystander['id']}")
        assert reread.json()["data"] == {"v": "changed in SQL"}  # dropped with the rest


@pytest.mark.e2e
async def test_a_write_on_one_api_process_invalidates_the_other_within_100_ms(settings, api_keys, tmp_path):
    import time

    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with (
        live_server(settings, "granian", tmp_path, grace_s=5) as writer,
        live_server(settings, "granian", tmp_path, grace_s=5) as reader,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{writer.port}", headers=headers) as on_writer,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{reader.port}", headers=headers) as on_reader,
    ):
        source = new_source()
        record = await put(on_writer, source, "r-1", {"v": 1})
        url = f"/api/v1/records/{record['id']}"
        assert (await on_reader.get(url)).json()["version"] == 1  # now cached in the reader
        await put(on_writer, source, "r-1", {"v": 2})
        written_at = time.perf_counter()
        while (await on_reader.get(url)).json()["version"] != 2:
            assert time.perf_counter() - written_at < 1.0, "the reader kept its stale copy"
        elapsed_ms = (time.perf_counter() - written_at) * 1000
    print(f"cross-process invalidation seen after {elapsed_ms:.1f} ms")
    assert elapsed_ms < 100


async def test_with_the_cache_disabled_every_read_goes_to_the_database(settings, api_keys, database):
    async with app_client(settings.model_copy(update={"cache_enabled": False}), api_keys["admin"]) as client:
        record = await put(client, new_source(), "r-1", {"v": 1})
        await client.get(f"/api/v1/records/{record['id']}")
        await change_behind_the_apis_back(database, record["id"], '{"v": "changed in SQL"}')
        reread = await client.get(f"/api/v1/records/{record['id']}")
        assert reread.json()["data"] == {"v": "changed in SQL"}


async def list_of(client: httpx.AsyncClient, source: str, **params: object) -> httpx.Response:
    response = await client.get("/api/v1/records", params={"source_system": source, **params})
    assert response.status_code == 200, response.text
    return response


async def test_a_list_page_is_cached_with_an_etag_and_answers_304(client, database):
    source = new_source()
    record = await put(client, source, "r-1", {"stage": "open"})
    first = await list_of(client, source)
    assert first.headers["cache-control"] == "private, max-age=60"
    await change_behind_the_apis_back(database, record["id"], '{"stage": "changed in SQL"}')
    second = await list_of(client, source)
    assert second.content == first.content  # from the cache, not the database
    etag = second.headers["etag"]
    not_modified = await client.get(
        "/api/v1/records", params={"source_system": source}, headers={"If-None-Match": etag}
    )
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == etag


async def test_a_write_drops_the_lists_it_may_change_and_only_those(client, database):
    source, elsewhere = new_source(), new_source()
    await put(client, source, "r-1", {"v": 1})
    bystander = await put(client, elsewhere, "b-1", {"v": 1})
    await list_of(client, source)
    await list_of(client, source, kind="deal")
    before_elsewhere = await list_of(client, elsewhere)
    await change_behind_the_apis_back(database, bystander["id"], '{"v": "changed in SQL"}')

    await put(client, source, "r-2", {"v": 1})  # an insert: new ids appear on existing pages

    assert len((await list_of(client, source)).json()["items"]) == 2
    assert len((await list_of(client, source, kind="deal")).json()["items"]) == 2
    assert (await list_of(client, elsewhere)).content == before_elsewhere.content  # still cached


async def test_a_bulk_insert_and_a_delete_drop_the_lists_covering_them(client):
    source = new_source()
    await put(client, source, "r-1", {"v": 1})
    assert len((await list_of(client, source)).json()["items"]) == 1
    lines = "".join(
        f'{{"source_system":"{source}","kind":"deal","external_id":"n-{n}","data":{{}}}}\n' for n in range(3)
    )
    assert (await client.post("/api/v1/records:bulk", content=lines, headers=NDJSON)).status_code == 200
    assert len((await list_of(client, source)).json()["items"]) == 4
    assert (await client.delete(f"/api/v1/records/{source}/deal/n-0")).status_code == 204
    assert len((await list_of(client, source)).json()["items"]) == 3


async def test_a_bad_cursor_is_refused_every_time_and_never_cached(client):
    source = new_source()
    for _ in range(2):
        response = await client.get("/api/v1/records", params={"source_system": source, "cursor": "bogus"})
        assert response.status_code == 422


async def test_a_clear_reaches_the_other_api_processes_list_pages(settings, api_keys, database):
    """Two apps (two processes' caches) on one Redis: a bulk too large to name clears both."""
    narrow = settings.model_copy(update={"cache_invalidate_max_keys": 1})
    async with (
        app_client(narrow, api_keys["admin"]) as writer,
        app_client(narrow, api_keys["admin"]) as reader,
    ):
        source = new_source()
        records = [await put(writer, source, f"r-{n}", {"v": 1}) for n in range(2)]
        stale_page = await list_of(reader, source)
        await change_behind_the_apis_back(database, records[0]["id"], '{"v": "changed in SQL"}')
        lines = "".join(
            f'{{"source_system":"{source}","kind":"deal","external_id":"r-{n}","data":{{"v":2}}}}\n'
            for n in range(2)
        )
        assert (await writer.post("/api/v1/records:bulk", content=lines, headers=NDJSON)).status_code == 200
        reader_cache = reader._transport.app.state.sophia.cache  # type: ignore[attr-defined]
        writer_cache = writer._transport.app.state.sophia.cache  # type: ignore[attr-defined]
        for _ in range(1000):
            if reader_cache.l2.epoch == writer_cache.l2.epoch:
                break
            await asyncio.sleep(0.001)
        fresh = await list_of(reader, source)
        assert fresh.content != stale_page.content
        assert [item["data"] for item in fresh.json()["items"]] == [{"v": 2}, {"v": 2}]
