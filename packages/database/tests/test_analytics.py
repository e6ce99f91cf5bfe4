"""The analytics summaries: moved forward deal by deal from the catalog's events (replays and late
events included), they hold exactly what a rebuild from the catalog and the stage history holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sophia.core.records import RecordKey
from sophia.database import analytics, catalog

TABLES = analytics.SUMMARY_TABLES
STAGES = ["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost", "", "Won"]
CREATED = [datetime(2026, month, 3, 9, tzinfo=UTC) for month in (1, 2, 5)]


@pytest.fixture(scope="module")
async def analytics_database(migrated_database) -> str:
    """A migrated database of this module's own: each example empties its catalog."""
    return await migrated_database()


@pytest.fixture(scope="module")
async def scenario_connection(analytics_database) -> AsyncIterator[asyncpg.Connection]:
    """One connection for every example: a new one each time cost its connect and, with it,
    asyncpg's statement cache (every statement of the consumers prepared again)."""
    connection = await asyncpg.connect(analytics_database)
    yield connection
    await connection.close()


async def snapshot(connection: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: sorted(
            (tuple(row) for row in await connection.fetch(f"SELECT * FROM sophia_analytics.{table}")),
            key=repr,
        )
        for table in TABLES
    }


async def empty(connection: asyncpg.Connection) -> None:
    """DELETE, not TRUNCATE: on a few rows it is 2 ms where TRUNCATE's new files take 50."""
    emptied = [
        *(f"sophia_core.{table}" for table in ("record_predictions", "unified_data_catalog", "outbox")),
        *(f"sophia_analytics.{table}" for table in ("stage_history", *TABLES)),
    ]
    async with connection.transaction():
        for table in emptied:
            await connection.execute(f"DELETE FROM {table}")


def json(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def talk(kind: str, number: int) -> RecordKey:
    return RecordKey("crm", kind, f"{kind}-{number}")  # beside the deals: a call names one by id


async def predict(
    connection: asyncpg.Connection, key: RecordKey, label: str | None, labels: list[str]
) -> None:
    record_id = await connection.fetchval(
        "SELECT id FROM sophia_core.unified_data_catalog WHERE source_system = $1 AND kind = $2 "
        "AND external_id = $3",
        key.source_system,
        key.kind,
        key.external_id,
    )
    if record_id is None:
        return None
    found = {"classification": {"labels": labels, "scores": {}}}
    if label is not None:
        found["sentiment"] = {"label": label, "scores": {}}
    for task, prediction in found.items():
        await connection.execute(
            "INSERT INTO sophia_core.record_predictions (record_id, task, model_version, record_version, "
            "prediction) VALUES ($1, $2, 'test', 1, $3::jsonb) ON CONFLICT (record_id, task) "
            "DO UPDATE SET prediction = excluded.prediction",
            record_id,
            task,
            json(prediction),
        )
    return record_id


def deal(number: int) -> RecordKey:
    return RecordKey("crm", "deal", f"d-{number}")


puts = st.tuples(
    st.just("put"),
    st.integers(0, 4),
    st.fixed_dictionaries(
        {
            "dealstage": st.sampled_from(STAGES),
            "amount": st.sampled_from(["1000.50", "250", "not a number", "-40"]),
            "hubspot_owner_id": st.sampled_from(["ann", "bo"]),
            "pipeline": st.sampled_from(["default", "renewals", ""]),
            "closedate": st.sampled_from(["2026-03-31", "2026-02-30", "soon", "2026-04-15T10:00:00Z"]),
            "associated_company_id": st.sampled_from(["acme", "globex", ""]),
        }
    ),
    st.sampled_from(CREATED),
)
deletes = st.tuples(st.just("delete"), st.integers(0, 4))
talks = st.tuples(
    st.just("talk"),
    st.integers(0, 3),
    st.sampled_from(["call", "message"]),
    st.sampled_from(CREATED),
    st.sampled_from([{}, {"deal_id": "d-0"}, {"deal_id": "d-1"}, {"company_id": "initech"}]),
)
predictions = st.tuples(
    st.just("predict"),
    st.integers(0, 3),
    st.sampled_from(["call", "message"]),
    st.sampled_from([None, "positive", "negative"]),
    st.lists(st.sampled_from(["pricing", "renewal", "legal"]), max_size=3),
)
silences = st.tuples(st.just("silence"), st.integers(0, 3), st.sampled_from(["call", "message"]))
applies = st.tuples(st.just("apply"), st.integers(1, 6), st.booleans(), st.booleans())


async def apply_activity(connection: asyncpg.Connection, ids: list[Any]) -> None:
    """As the consumer does: the records, then the calls whose deal moved."""
    following = await analytics.apply_activity_changes(connection, ids)
    if following:
        await analytics.apply_activity_changes(connection, following)


async def consume(connection: asyncpg.Connection, *record_ids: Any) -> None:
    """What the consumers do with one batch of events, of the records `record_ids`."""
    await analytics.apply_deal_changes(connection, record_ids)
    await analytics.apply_conversation_changes(connection, record_ids)
    await apply_activity(connection, list(record_ids))


async def run_scenario(connection: asyncpg.Connection, operations: list[tuple[Any, ...]]) -> None:
    """The operations, each write and prediction an event (the record it is of); the consumers
    see the last ones when told (again, in the wrong order, or several in one batch), then at last
    each event they have not seen, once, in order: never a record without an event of its own."""
    events: list[Any] = []
    consumed: set[int] = set()
    await empty(connection)
    for operation in operations:
        if operation[0] == "put":
            _, number, data, created_at = operation
            events.append((await catalog.upsert(connection, deal(number), json(data), created_at)).id)
        elif operation[0] == "delete":
            with contextlib.suppress(catalog.NotFound):
                events.append((await catalog.soft_delete(connection, deal(operation[1])))[0])
        elif operation[0] == "talk":
            _, number, kind, created_at, link = operation
            written = await catalog.upsert(
                connection, talk(kind, number), json({"text": "hello", **link}), created_at
            )
            events.append(written.id)
        elif operation[0] == "silence":
            with contextlib.suppress(catalog.NotFound):
                events.append((await catalog.soft_delete(connection, talk(operation[2], operation[1])))[0])
        elif operation[0] == "predict":  # what the enrichment writes, and its ml.prediction event
            _, number, kind, label, labels = operation
            predicted = await predict(connection, talk(kind, number), label, labels)
            if predicted is not None:
                events.append(predicted)
        else:  # the last `count` events, one by one (forwards or backwards) or in one batch
            _, count, backwards, *together = operation
            last = range(max(len(events) - count, 0), len(events))
            if together and together[0]:
                await consume(connection, *(events[index] for index in last))
            else:
                for index in reversed(last) if backwards else last:
                    await consume(connection, events[index])
            consumed.update(last)
    for index, record_id in enumerate(events):  # the events not seen yet, once, in order
        if index not in consumed:
            await consume(connection, record_id)
    incremental = await snapshot(connection)
    await analytics.rebuild(connection)
    rebuilt = await snapshot(connection)
    assert incremental == rebuilt


def put(number: int, stage: str) -> tuple[Any, ...]:
    data = {"dealstage": stage, "amount": "10", "hubspot_owner_id": "ann", "pipeline": "default"}
    return ("put", number, data, CREATED[0])


OPERATIONS = st.lists(
    st.one_of(puts, puts, deletes, applies, talks, predictions, silences), min_size=1, max_size=14
)


@example(
    operations=[
        put(0, "qualifiedtobuy"),
        put(0, "contractsent"),
        ("apply", 1, False),
        put(0, "qualifiedtobuy"),
    ]
)
@example(
    operations=[
        ("talk", 0, "call", CREATED[2], {"company_id": "initech"}),
        ("talk", 1, "call", CREATED[0], {"company_id": "initech"}),
        ("apply", 2, False),
        ("silence", 0, "call"),  # the last touch goes back to the older call
        ("apply", 1, False),
    ]
)
@example(
    operations=[
        ("talk", 0, "call", CREATED[0], {"deal_id": "d-0"}),
        ("put", 0, {"dealstage": "qualifiedtobuy", "associated_company_id": "acme"}, CREATED[0]),
        ("apply", 2, False),
        ("put", 0, {"dealstage": "qualifiedtobuy", "associated_company_id": "globex"}, CREATED[0]),
        ("apply", 1, False),
        ("delete", 0),
        ("apply", 1, False),
    ]
)
@example(
    operations=[
        ("talk", 0, "call", CREATED[0], {}),
        ("predict", 0, "call", "positive", ["pricing"]),
        ("apply", 1, False),
        ("predict", 0, "call", "negative", ["legal"]),
        ("apply", 1, False),
        ("silence", 0, "call"),
        ("apply", 1, False),
    ]
)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
async def test_incremental_summaries_equal_a_rebuild_after_any_writes_replays_and_late_events(
    scenario_connection, operations
):
    await run_scenario(scenario_connection, operations)


@pytest.mark.load  # the same, 200 sequences: 7 s
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
async def test_incremental_summaries_equal_a_rebuild_over_many_more_sequences(
    scenario_connection, operations
):
    await run_scenario(scenario_connection, operations)


async def test_a_deal_moving_through_stages_is_counted_in_each_summary(analytics_database):
    connection = await asyncpg.connect(analytics_database)
    try:
        await empty(connection)
        january = datetime(2026, 1, 5, tzinfo=UTC)
        first = {
            "dealstage": "qualifiedtobuy",
            "amount": "100",
            "hubspot_owner_id": "ann",
            "pipeline": "default",
        }
        await catalog.upsert(connection, deal(1), json(first), january)
        await catalog.upsert(connection, deal(2), json({**first, "amount": "300"}), january)
        stored = await catalog.upsert(
            connection, deal(1), json({**first, "dealstage": "closedwon", "closedate": "2026-01-25"})
        )
        await analytics.apply_deal_changes(connection, [stored.id])
        ids = [row["id"] for row in await connection.fetch("SELECT id FROM sophia_core.unified_data_catalog")]
        applied = await analytics.apply_deal_changes(connection, ids)
        assert applied.deals == 1  # the other was applied already
        pipeline = await connection.fetch(
            "SELECT stage, status, deals, amount FROM sophia_analytics.deal_summary ORDER BY stage"
        )
        assert [tuple(row) for row in pipeline] == [
            ("closedwon", "won", 1, Decimal(100)),
            ("qualifiedtobuy", "open", 1, Decimal(300)),
        ]
        closed = await connection.fetchrow("SELECT * FROM sophia_analytics.closed_summary")
        assert (closed["status"], closed["deals"], closed["cycle_days"]) == ("won", 1, 20)
        stages = {
            row["stage"]: (row["entered"], row["reached"], row["exited"])
            for row in await connection.fetch(
                "SELECT stage, sum(entered) AS entered, sum(reached) AS reached, sum(exited) AS exited "
                "FROM sophia_analytics.stage_summary GROUP BY stage"
            )
        }
        assert stages == {"qualifiedtobuy": (2, 2, 1), "closedwon": (1, 1, 0)}
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2026-03-31", date(2026, 3, 31)),
        ("2026-04-15T10:00:00Z", date(2026, 4, 15)),
        ("2026-02-30", None),
        ("2026-13-01", None),
        ("0000-01-01", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
async def test_a_date_a_client_wrote_is_read_as_a_date_or_as_none_never_an_error(
    scenario_connection, written, read
):
    assert await scenario_connection.fetchval("SELECT sophia_analytics.safe_date($1)", written) == read


async def test_two_connections_applying_overlapping_batches_at_once_agree_with_a_rebuild(analytics_database):
    """The consumer's batches run two at a time: each takes its deals' locks and the summaries'
    shared rows in one order, so overlapping batches wait for each other and never deadlock."""
    first, second = await asyncpg.connect(analytics_database), await asyncpg.connect(analytics_database)
    try:
        await empty(first)
        ids = []
        for number in range(40):
            data = {"dealstage": STAGES[number % 3], "amount": str(10 * number), "hubspot_owner_id": "ann"}
            ids.append((await catalog.upsert(first, deal(number), json(data), CREATED[number % 3])).id)
        for stage in STAGES[1:5]:  # every deal a stage on, then both connections apply them at once
            for number in range(0, 40, 2):
                data = {"dealstage": stage, "amount": str(10 * number), "hubspot_owner_id": "bo"}
                await catalog.upsert(first, deal(number), json(data))
            applied = await asyncio.gather(
                analytics.apply_deal_changes(first, ids[:30]),
                analytics.apply_deal_changes(second, list(reversed(ids[10:]))),
            )
            assert sum(result.deals for result in applied) >= 20  # each changed deal once, by either
        deal_tables = ("deal_facts", "deal_summary", "closed_summary", "stage_summary")
        incremental = await snapshot(first)
        await analytics.rebuild(first)
        rebuilt = await snapshot(first)
        assert {table: incremental[table] for table in deal_tables} == {
            table: rebuilt[table] for table in deal_tables
        }
    finally:
        await first.close()
        await second.close()
