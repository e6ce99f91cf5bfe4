"""Keyset pagination of `GET /api/v1/records`: every record once, in id order, even while writes land."""

from __future__ import annotations

import asyncio
import math
import uuid
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KIND = "deal"
MAX_INSERTS = 30
"""New records one paging run may insert: paging ends because the writes do."""


def examples(count: int) -> settings:
    """A few examples in the fast tier; the load tier runs each property twenty times as long."""
    return settings(
        max_examples=count, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


FAST, THOROUGH = examples(5), examples(100)


def new_source_system() -> str:
    return "pg" + uuid.uuid4().hex[:10]


async def bulk_put(client, source_system: str, external_ids: list[str], revision: int = 0) -> None:
    if not external_ids:
        return
    lines = (
        orjson.dumps(
            {
                "source_system": source_system,
                "kind": KIND,
                "external_id": external_id,
                "data": {"revision": revision},
            }
        )
        for external_id in external_ids
    )
    response = await client.post(
        "/api/v1/records:bulk",
        content=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["received"] == len(external_ids)


async def put(client, source_system: str, external_id: str, revision: int = 0) -> None:
    response = await client.put(
        f"/api/v1/records/{source_system}/{KIND}/{external_id}", json={"data": {"revision": revision}}
    )
    assert response.status_code in (200, 201), response.text


async def fetch_page(
    client, source_system: str, limit: int, cursor: str | None
) -> tuple[list[dict], str | None]:
    params: dict[str, str | int] = {"source_system": source_system, "limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    response = await client.get("/api/v1/records", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["items"], body["next_cursor"]


def assert_ascending_ids(items: list[dict]) -> None:
    ids = [UUID(item["id"]) for item in items]
    assert ids == sorted(ids), "pages must come in ascending id order"
    assert len(set(ids)) == len(ids), "a record was returned twice"


PAGES = {"record_count": st.integers(0, 120), "page_size": st.integers(1, 50)}


@FAST
@given(**PAGES)
async def test_paging_returns_every_record_exactly_once_in_ascending_id_order(
    client, record_count, page_size
):
    await paging_returns_every_record_once(client, record_count, page_size)


@pytest.mark.load
@THOROUGH
@given(**PAGES)
async def test_paging_returns_every_record_exactly_once_thoroughly(client, record_count, page_size):
    await paging_returns_every_record_once(client, record_count, page_size)


async def paging_returns_every_record_once(client, record_count: int, page_size: int) -> None:
    source_system = new_source_system()
    external_ids = [f"r-{number}" for number in range(record_count)]
    await bulk_put(client, source_system, external_ids)

    pages: list[list[dict]] = []
    cursor: str | None = None
    while cursor is not None or not pages:
        assert len(pages) <= record_count, "the cursor never reached the end"
        items, cursor = await fetch_page(client, source_system, page_size, cursor)
        pages.append(items)

    seen = [item for page in pages for item in page]
    assert_ascending_ids(seen)
    assert sorted(item["external_id"] for item in seen) == sorted(external_ids)
    assert all(len(page) == page_size for page in pages[:-1])
    assert len(pages) == max(1, math.ceil(record_count / page_size)), "no empty trailing page"


@st.composite
def writes_between_pages(
    draw, seen: list[str], unseen: list[str], max_inserts: int
) -> tuple[int, str, list[str]]:
    """New records to insert (how many, by PUT or bulk) and existing ones to update before the next page."""
    inserts = draw(st.integers(0, min(4, max_inserts)))
    via = draw(st.sampled_from(["put", "bulk"]))
    updates = draw(st.lists(st.sampled_from(seen), max_size=3)) if seen else []
    if unseen:
        updates += draw(st.lists(st.sampled_from(unseen), max_size=2))
    return inserts, via, updates


WRITES = {"record_count": st.integers(1, 60), "page_size": st.integers(1, 15), "data": st.data()}


@FAST
@given(**WRITES)
async def test_paging_while_records_are_inserted_and_updated_sees_each_existing_record_once(
    client, record_count, page_size, data
):
    await paging_while_writing_sees_each_existing_record_once(client, record_count, page_size, data)


@pytest.mark.load
@THOROUGH
@given(**WRITES)
async def test_paging_while_records_are_inserted_and_updated_thoroughly(
    client, record_count, page_size, data
):
    await paging_while_writing_sees_each_existing_record_once(client, record_count, page_size, data)


async def paging_while_writing_sees_each_existing_record_once(
    client, record_count: int, page_size: int, data: st.DataObject
) -> None:
    source_system = new_source_system()
    existing = [f"r-{number}" for number in range(record_count)]
    await bulk_put(client, source_system, existing)

    seen: list[dict] = []
    inserted: list[str] = []
    cursor: str | None = None
    for page_number in range(record_count + MAX_INSERTS + 1):
        items, cursor = await fetch_page(client, source_system, page_size, cursor)
        seen.extend(items)
        if cursor is None:
            break
        seen_ids = {item["external_id"] for item in seen}
        unseen = [external_id for external_id in existing if external_id not in seen_ids]
        writes = writes_between_pages(sorted(seen_ids), unseen, MAX_INSERTS - len(inserted))
        inserts, via, updates = data.draw(writes)
        fresh = [f"new-{page_number}-{number}" for number in range(inserts)]
        if via == "bulk":
            await bulk_put(client, source_system, fresh + updates, revision=page_number + 1)
        else:
            for external_id in fresh + updates:
                await put(client, source_system, external_id, revision=page_number + 1)
        inserted.extend(fresh)
    assert cursor is None, "the cursor never reached the end"

    assert_ascending_ids(seen)
    seen_external_ids = [item["external_id"] for item in seen]
    assert sorted(set(seen_external_ids) & set(existing)) == sorted(existing)
    assert set(seen_external_ids) <= set(existing) | set(inserted)


async def test_paging_while_a_writer_inserts_concurrently_sees_each_existing_record_once(client):
    source_system = new_source_system()
    existing = [f"r-{number}" for number in range(200)]
    await bulk_put(client, source_system, existing)
    paged = asyncio.Event()
    inserted: list[str] = []

    async def writer() -> None:
        while not paged.is_set():
            external_id = f"new-{len(inserted)}"
            await put(client, source_system, external_id)
            inserted.append(external_id)
            await put(client, source_system, existing[len(inserted) % len(existing)], revision=len(inserted))

    async def reader() -> list[dict]:
        seen: list[dict] = []
        cursor: str | None = None
        try:
            while cursor is not None or not seen:
                assert len(seen) < 10 * len(existing), "the cursor never reached the end"
                items, cursor = await fetch_page(client, source_system, 7, cursor)
                seen.extend(items)
        finally:
            paged.set()
        return seen

    seen, _ = await asyncio.gather(reader(), writer())

    assert inserted, "the writer never ran while paging"
    assert_ascending_ids(seen)
    seen_external_ids = [item["external_id"] for item in seen]
    assert sorted(set(seen_external_ids) & set(existing)) == sorted(existing)
    assert set(seen_external_ids) <= set(existing) | set(inserted)
