"""Contract of the deals view: `active_deals_mv` kept by the catalog's writes, its paged reads
(cached until an announcement or a refresh drops them), and the admin refresh."""

from __future__ import annotations

import math
import uuid

import httpx

REFRESH = "/api/v1/admin/views/active-deals:refresh"


def new_source() -> str:
    return f"deals-{uuid.uuid4().hex[:12]}"


async def put_deal(client: httpx.AsyncClient, source_system: str, external_id: str, **data: object) -> dict:
    response = await client.put(f"/api/v1/records/{source_system}/deal/{external_id}", json={"data": data})
    assert response.status_code in {200, 201}, response.text
    return response.json()


async def refresh(client: httpx.AsyncClient) -> None:
    response = await client.post(REFRESH)
    assert response.status_code == 204, response.text


async def all_active_deals(client: httpx.AsyncClient, limit: int | None = None) -> tuple[list[dict], int]:
    """Every item of every page, following next_cursor, and how many pages it took."""
    items: list[dict] = []
    params: dict[str, object] = {"limit": limit} if limit else {}
    pages = 0
    while True:
        response = await client.get("/api/v1/deals/active", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        pages += 1
        if page["next_cursor"] is None:
            return items, pages
        params["cursor"] = page["next_cursor"]


def of_source(items: list[dict], source_system: str) -> dict[str, dict]:
    return {item["external_id"]: item for item in items if item["source_system"] == source_system}


async def test_refresh_of_active_deals_is_204_with_no_body(client):
    response = await client.post(REFRESH)
    assert response.status_code == 204
    assert response.content == b""


async def test_active_deals_list_an_open_deal_with_a_numeric_amount(client):
    source = new_source()
    record = await put_deal(
        client, source, "d-open", dealname="Acme", amount="1200.50", dealstage="qualified"
    )
    await refresh(client)
    deals = of_source((await all_active_deals(client))[0], source)
    assert deals["d-open"]["id"] == record["id"]
    assert deals["d-open"]["name"] == "Acme"
    assert deals["d-open"]["stage"] == "qualified"
    assert deals["d-open"]["amount"] == 1200.5
    assert isinstance(deals["d-open"]["amount"], int | float)


async def test_active_deals_leave_out_closed_deals(client):
    source = new_source()
    await put_deal(client, source, "d-open", amount="10", dealstage="appointmentscheduled")
    for stage in ["closedwon", "closedlost", "ClosedWon"]:
        await put_deal(client, source, f"d-{stage}", amount="10", dealstage=stage)
    await refresh(client)
    assert of_source((await all_active_deals(client))[0], source).keys() == {"d-open"}


async def test_active_deals_show_a_non_numeric_amount_as_null(client):
    source = new_source()
    await put_deal(client, source, "d-1", amount="a lot", dealstage="qualified")
    await refresh(client)
    assert of_source((await all_active_deals(client))[0], source)["d-1"]["amount"] is None


async def test_cached_pages_of_active_deals_change_when_a_refresh_drops_them(client):
    source = new_source()
    await put_deal(client, source, "d-1", dealstage="qualified")
    await refresh(client)  # other tests' pages are cached
    assert of_source((await all_active_deals(client))[0], source).keys() == {"d-1"}
    await put_deal(client, source, "d-1", dealstage="closedwon")
    assert of_source((await all_active_deals(client))[0], source).keys() == {"d-1"}  # the cached pages
    await refresh(client)
    assert of_source((await all_active_deals(client))[0], source) == {}


async def test_a_deleted_deal_leaves_active_deals_after_refresh(client):
    source = new_source()
    await put_deal(client, source, "d-1", dealstage="qualified")
    await client.delete(f"/api/v1/records/{source}/deal/d-1")
    await refresh(client)
    assert of_source((await all_active_deals(client))[0], source) == {}


async def test_active_deals_pages_follow_next_cursor_to_every_deal_once(client, database):
    source = new_source()
    for number in range(5):
        await put_deal(client, source, f"d-{number}", dealstage="qualified")
    await refresh(client)
    async with database.connection() as connection:  # the worker's other tests' deals are there too
        total = await connection.fetchval("SELECT count(*) FROM sophia_core.active_deals_mv")
    limit = min(100, max(2, math.ceil(total / 6)))  # several pages, however many deals there are
    items, pages = await all_active_deals(client, limit=limit)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)) == total
    assert ids == sorted(ids)
    assert of_source(items, source).keys() == {f"d-{number}" for number in range(5)}
    assert pages == math.ceil(len(items) / limit)
    assert pages >= 3


async def test_active_deals_refuse_a_records_cursor_with_422(client):
    source = new_source()
    for number in range(2):
        await client.put(f"/api/v1/records/{source}/deal/d-{number}", json={"data": {}})
    page = (await client.get("/api/v1/records", params={"source_system": source, "limit": 1})).json()
    response = await client.get("/api/v1/deals/active", params={"cursor": page["next_cursor"]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["location"] == ["query", "cursor"]


async def test_an_amount_too_long_for_numeric_becomes_null_and_refresh_keeps_working(client):
    source = f"deals-{uuid.uuid4().hex[:10]}"
    huge = "9" * 200_000
    response = await client.put(
        f"/api/v1/records/{source}/deal/huge", json={"data": {"dealname": "Huge", "amount": huge}}
    )
    assert response.status_code == 201
    assert (await client.post("/api/v1/admin/views/active-deals:refresh")).status_code == 204
