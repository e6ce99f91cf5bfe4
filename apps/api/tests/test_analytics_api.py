"""Contract of the sales analytics endpoints: each aggregate over the summaries the consumer keeps,
with its freshness, cached until the consumer moves a summary, and bad filters refused by name."""

from __future__ import annotations

import uuid
from uuid import UUID

import httpx
import orjson
import pytest

from sophia.cache.catalog import ANALYTICS_TAG
from sophia.database import analytics

JANUARY = "2026-01-05T09:00:00Z"


@pytest.fixture
def source() -> str:
    return f"an{uuid.uuid4().hex[:12]}"


async def put_deal(client: httpx.AsyncClient, source: str, number: int, **data: object) -> UUID:
    response = await client.put(
        f"/api/v1/records/{source}/deal/d-{number}",
        json={"data": {"hubspot_owner_id": "ann", "pipeline": "default", **data}, "created_at": JANUARY},
    )
    assert response.status_code in {200, 201}, response.text
    return UUID(response.json()["id"])


async def consume(app, ids: list[UUID]) -> None:
    """What the analytics consumer does with these records' events (the workers' sink, in-process)."""
    async with app.state.sophia.database.connection() as connection:
        await analytics.apply_deal_changes(connection, ids)
        await analytics.apply_conversation_changes(connection, ids)
        following = await analytics.apply_activity_changes(connection, ids)
        await analytics.apply_activity_changes(connection, following)
    await app.state.sophia.cache.invalidate(tags=[ANALYTICS_TAG])


async def get(client: httpx.AsyncClient, path: str, **params: object) -> dict:
    response = await client.get(f"/api/v1/analytics/{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_each_aggregate_counts_the_deals_of_its_filter(app, client, source):
    ids = [
        await put_deal(client, source, 1, dealstage="qualifiedtobuy", amount="100"),
        await put_deal(client, source, 2, dealstage="contractsent", amount="300"),
        await put_deal(client, source, 3, dealstage="closedwon", amount="200", closedate="2026-01-25"),
        await put_deal(client, source, 4, dealstage="closedlost", amount="50", closedate="2026-02-10"),
    ]
    await consume(app, ids)

    pipeline = await get(client, "pipeline", source_system=source)
    assert pipeline["as_of"] is not None
    assert pipeline["stages"] == [
        {"stage": "qualifiedtobuy", "deals": 1, "amount": 100.0, "weighted_amount": 40.0},
        {"stage": "contractsent", "deals": 1, "amount": 300.0, "weighted_amount": 270.0},
    ]
    rate = (await get(client, "win-rate", source_system=source))["win_rate"]
    assert (rate["won"], rate["lost"], rate["win_rate"]) == (1, 1, 0.5)
    assert (rate["average_deal_size"], rate["average_cycle_days"]) == (200.0, 20.0)
    assert [month["month"] for month in rate["by_month"]] == ["2026-01-01", "2026-02-01"]
    assert [owner["owner"] for owner in rate["by_owner"]] == ["ann"]
    january = (await get(client, "win-rate", source_system=source, to="2026-01-31"))["win_rate"]
    assert (january["won"], january["lost"]) == (1, 0)

    velocity = (await get(client, "velocity", source_system=source))["velocity"]
    assert velocity["open_deals"] == 2
    assert velocity["velocity_per_day"] == pytest.approx(2 * 200 * 0.5 / 20)
    cohorts = (await get(client, "cohorts", source_system=source))["cohorts"]
    assert cohorts == [{"month": "2026-01-01", "open": 2, "won": 1, "lost": 1}]
    funnel = (await get(client, "funnel", source_system=source))["stages"]
    assert [(stage["stage"], stage["reached"]) for stage in funnel] == [
        ("qualifiedtobuy", 1),
        ("contractsent", 1),
        ("closedwon", 1),
        ("closedlost", 1),
    ]
    assert funnel[1]["conversion"] == 1.0


async def test_an_answer_is_cached_until_the_consumer_moves_a_summary(app, client, source):
    first = await put_deal(client, source, 1, dealstage="qualifiedtobuy", amount="100")
    await consume(app, [first])
    before = await client.get("/api/v1/analytics/pipeline", params={"source_system": source})
    again = await client.get("/api/v1/analytics/pipeline", params={"source_system": source})
    assert before.headers["etag"] == again.headers["etag"]

    moved = await put_deal(client, source, 1, dealstage="contractsent", amount="100")
    assert (await get(client, "pipeline", source_system=source))["stages"][0]["stage"] == "qualifiedtobuy"
    await consume(app, [moved])
    after = await get(client, "pipeline", source_system=source)
    assert [stage["stage"] for stage in after["stages"]] == ["contractsent"]


async def test_sentiment_and_topics_count_calls_and_messages_per_week(app, client, source):
    ids = []
    for number, (kind, label, labels) in enumerate(
        [
            ("call", "positive", ["pricing"]),
            ("call", "negative", ["pricing", "legal"]),
            ("message", "positive", []),
        ]
    ):
        response = await client.put(
            f"/api/v1/records/{source}/{kind}/t-{number}",
            json={"data": {"text": "hello"}, "created_at": "2026-03-04T10:00:00Z"},  # a Wednesday
        )
        record_id = UUID(response.json()["id"])
        ids.append(record_id)
        async with app.state.sophia.database.connection() as connection:
            for task, prediction in (("sentiment", {"label": label}), ("classification", {"labels": labels})):
                await connection.execute(
                    "INSERT INTO sophia_core.record_predictions (record_id, task, model_version, "
                    "record_version, prediction) VALUES ($1, $2, 'test', 1, $3::jsonb)",
                    record_id,
                    task,
                    orjson.dumps(prediction).decode(),
                )
    await consume(app, ids)
    weeks = (await get(client, "sentiment", source_system=source))["weeks"]
    assert weeks == [{"week": "2026-03-02", "counts": {"negative": 1, "positive": 2}}]
    calls = (await get(client, "sentiment", source_system=source, kind="call"))["weeks"]
    assert calls[0]["counts"] == {"negative": 1, "positive": 1}
    topics = (await get(client, "topics", source_system=source))["weeks"]
    assert topics == [{"week": "2026-03-02", "counts": {"legal": 1, "pricing": 2}}]
    later = await get(client, "topics", source_system=source, **{"from": "2026-03-09"})
    assert later["weeks"] == []


async def test_activity_per_company_counts_calls_through_their_deal(app, client, source):
    deal = await put_deal(client, source, 1, dealstage="qualifiedtobuy", associated_company_id="acme")
    ids = [deal]
    for number, data in enumerate([{"deal_id": "d-1"}, {"deal_id": "d-1"}, {"company_id": "globex"}]):
        response = await client.put(
            f"/api/v1/records/{source}/call/c-{number}",
            json={"data": {"text": "hi", **data}, "created_at": f"2026-03-0{number + 1}T10:00:00Z"},
        )
        ids.append(UUID(response.json()["id"]))
    await consume(app, ids)
    rows = (await get(client, "companies", source_system=source, order="calls"))["companies"]
    assert [(row["company"], row["calls"], row["open_deals"]) for row in rows] == [
        ("acme", 2, 1),
        ("globex", 1, 0),
    ]
    assert rows[0]["last_touch"].startswith("2026-03-02")

    moved = await put_deal(client, source, 1, dealstage="qualifiedtobuy", associated_company_id="initech")
    await consume(app, [moved])  # the deal's calls follow it
    rows = (await get(client, "companies", source_system=source, order="calls"))["companies"]
    assert [(row["company"], row["calls"]) for row in rows] == [("initech", 2), ("globex", 1)]
    one = (await get(client, "companies", source_system=source, company="globex"))["companies"]
    assert [row["company"] for row in one] == ["globex"]


@pytest.mark.parametrize(
    ("path", "params", "where"),
    [
        ("pipeline", {"from": "2026-03-01", "to": "2026-01-01"}, "to"),
        ("pipeline", {"from": "March"}, "from"),
        ("pipeline", {"source_system": "Not A Name"}, "source_system"),
        ("pipeline", {"owner": ""}, "owner"),
        ("sentiment", {"kind": "deal"}, "kind"),
        ("topics", {"from": "2026-03-09", "to": "2026-03-02"}, "to"),
        ("companies", {"order": "revenue"}, "order"),
        ("companies", {"limit": 501}, "limit"),
    ],
)
async def test_a_bad_filter_is_a_422_naming_it(client, path, params, where):
    response = await client.get(f"/api/v1/analytics/{path}", params=params)
    assert response.status_code == 422
    assert where in response.text


async def test_analytics_need_a_key(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as anonymous:
        response = await anonymous.get("/api/v1/analytics/funnel")
    assert response.status_code == 401
