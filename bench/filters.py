"""`data.<key>=<value>` list filters: the old `data ->> key = value` (side A, no index) against the
catalog's list query as it is today, `data @> {key: value}` on the GIN index (side B).

    uv run python bench/filters.py [--records 1000000] [--queries 200] [--timeout 10] [--json]

The catalog is seeded by COPY with deals whose `data` holds `stage` (6 values), `region` (10),
`owner` (200, digits, so B also tries the number they spell) and `account` (one per ~10 records),
then analyzed. Each query asks for one page (`--limit`) of one filter in the catalog's id order, one
query at a time on one connection per side. The filters cycle through the key classes, those four
keys and `absent` (a value no record has); within a class each value is drawn once until the class
runs out of values (only `stage` and `region` do). Both sides run the same filters, alternating which
goes first, so neither inherits the other's warm buffers alone. A is the pre-0012 list SQL under a
`statement_timeout` of `--timeout` (a timed-out query counts at its timeout); B calls
`sophia.database.catalog.list_page` itself. Printed: p50/p99 and queries/s by side and key class,
A/B of p50, and EXPLAIN ANALYZE of one B query with whether its plan scans the GIN index.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import harness

from sophia.core.records import RecordFilter
from sophia.database import catalog
from sophia.database.catalog import CATALOG, RECORD_JSON
from sophia.shared.settings import Settings

OLD_FILTER = (
    f"SELECT c.id, c.version, {RECORD_JSON} AS json FROM {CATALOG} AS c "
    "WHERE c.deleted_at IS NULL AND c.data ->> $1 = $2 ORDER BY c.id LIMIT $3"
)
"""The list query for one data filter before migration 0012."""
GIN_INDEX = "catalog_data_path"
API_LIST_TIMEOUT_S = Settings.model_fields["db_list_timeout_s"].default
STAGES = ("lead", "qualified", "proposal", "negotiation", "won", "lost")
REGIONS = ("eu-west", "eu-north", "eu-south", "us-east", "us-west", "us-mid", "apac", "latam", "mea", "anz")
OWNERS = tuple(str(1000 + index) for index in range(200))
CLASSES = ("stage", "region", "owner", "account", "absent")
KEYS = ("stage", "region", "owner", "account")
CHUNK_ROWS = 50_000
RECORDS_PER_ACCOUNT = 10
Sample = tuple[str, float, bool]
"""One query: its key class, its seconds, and whether it was cancelled at its time limit."""


HEADLINE = harness.Headline(
    anchor="`data ->> key = value`, no index",
    subject="`catalog.list_page`: `data @>` on the GIN index",
    a=harness.Figure("old.p50_ms", "ms p50"),
    b=harness.Figure("product.p50_ms", "ms p50"),
    ratio_label="A/B",
    section="`data.<key>=<value>` filters",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records seeded before measuring")
    parser.add_argument("--queries", type=int, default=200, help="filters measured, the same on each side")
    parser.add_argument("--limit", type=int, default=50, help="page size asked for")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a query is cancelled")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.records, options.limit) < 1 or options.queries < len(CLASSES) or options.timeout <= 0:
        parser.error(f"--records and --limit must be >= 1, --queries >= {len(CLASSES)}, --timeout > 0")
    return options


def account_count(records: int) -> int:
    return max(1, records // RECORDS_PER_ACCOUNT)


def deal_rows(start: int, stop: int, *, accounts: int, rng: random.Random) -> list[dict[str, Any]]:
    """Deals `start` to `stop` as bulk-ingest lines, their filter keys drawn uniformly."""
    return [
        {
            "source_system": "bench",
            "kind": "deal",
            "external_id": f"deal-{index:08d}",
            "data": {
                "name": f"Deal {index}",
                "amount": rng.randint(500, 250_000),
                "stage": rng.choice(STAGES),
                "region": rng.choice(REGIONS),
                "owner": rng.choice(OWNERS),
                "account": f"acct-{rng.randrange(accounts):06d}",
            },
        }
        for index in range(start, stop)
    ]


async def seed(database_url: str, records: int) -> float:
    """COPY the deals in chunks, then VACUUM ANALYZE (statistics, GIN pending list); the seconds."""
    rng = random.Random(7)
    accounts = account_count(records)
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        for start in range(0, records, CHUNK_ROWS):
            rows = deal_rows(start, min(start + CHUNK_ROWS, records), accounts=accounts, rng=rng)
            await harness.copy_rows(connection, rows)
        await connection.execute(f"VACUUM ANALYZE {CATALOG}", timeout=600)
    finally:
        await connection.close(timeout=10)
    return time.perf_counter() - started


def filters(count: int, *, records: int, seed: int = 11) -> list[tuple[str, str, str]]:
    """`count` (class, key, value), cycling through the classes; a class's values each used once
    before any repeats."""
    rng = random.Random(seed)
    accounts = rng.sample(range(account_count(records)), k=min(count, account_count(records)))
    pools: dict[str, list[tuple[str, str]]] = {
        "stage": [("stage", value) for value in STAGES],
        "region": [("region", value) for value in REGIONS],
        "owner": [("owner", value) for value in OWNERS],
        "account": [("account", f"acct-{index:06d}") for index in accounts],
        "absent": [(rng.choice(KEYS), f"none-{index:06d}") for index in range(count)],
    }
    drawn: dict[str, list[tuple[str, str]]] = {name: [] for name in CLASSES}
    chosen = []
    for index in range(count):
        name = CLASSES[index % len(CLASSES)]
        if not drawn[name]:
            drawn[name] = rng.sample(pools[name], k=len(pools[name]))
        chosen.append((name, *drawn[name].pop()))
    return chosen


async def product_form(
    connection: asyncpg.Connection, key: str, value: str, limit: int, timeout_s: float
) -> None:
    where = RecordFilter(data=((key, value),))
    await catalog.list_page(connection, where, None, limit, timeout_s=timeout_s)


async def measure(
    database_url: str, chosen: list[tuple[str, str, str]], *, limit: int, timeout_s: float
) -> tuple[dict[str, list[Sample]], dict[str, dict[str, int]]]:
    """Each filter on both sides, A first on even filters and B first on odd ones: ({side: its
    samples}, {side: its plan counts})."""
    statement_timeout = {"statement_timeout": str(int(timeout_s * 1000))}
    old = await asyncpg.connect(database_url, timeout=10, server_settings=statement_timeout)
    new = await asyncpg.connect(database_url, timeout=10)
    samples: dict[str, list[Sample]] = {"A": [], "B": []}
    try:
        sides: list[tuple[str, Callable[[str, str], Awaitable[object]]]] = [
            ("A", lambda key, value: old.fetch(OLD_FILTER, key, value, limit)),
            ("B", lambda key, value: product_form(new, key, value, limit, timeout_s)),
        ]
        for _, query in sides:  # prepare both statements unmeasured
            await query("stage", STAGES[0])
        for index, (name, key, value) in enumerate(chosen):
            for side, query in sides if index % 2 == 0 else reversed(sides):
                started, timed_out = time.perf_counter(), False
                try:
                    await query(key, value)
                except (TimeoutError, asyncpg.QueryCanceledError):
                    timed_out = True
                samples[side].append((name, time.perf_counter() - started, timed_out))
        plans = {side: await plan_counts(connection) for side, connection in (("A", old), ("B", new))}
    finally:
        await old.close(timeout=10)
        await new.close(timeout=10)
    return samples, plans


async def plan_counts(connection: asyncpg.Connection) -> dict[str, int]:
    """How often this connection's prepared statements ran a custom plan and the generic one: past
    five runs PostgreSQL may settle on a generic plan, which never sees the filter's value."""
    [row] = await connection.fetch(
        "SELECT coalesce(sum(custom_plans), 0) AS custom, coalesce(sum(generic_plans), 0) AS generic "
        "FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'",
        timeout=10,
    )
    return {"custom": int(row["custom"]), "generic": int(row["generic"])}


def summary(samples: list[Sample]) -> dict[str, Any]:
    latencies = sorted(seconds for _, seconds, _ in samples)
    timeouts = sum(timed_out for _, _, timed_out in samples)
    return {
        "queries": len(samples),
        "per_s": round(len(samples) / sum(latencies), 2),
        "p50_ms": round(harness.percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(harness.percentile(latencies, 0.99) * 1000, 3),
        "timeouts": timeouts,
        "over_api_list_timeout": sum(seconds > API_LIST_TIMEOUT_S for seconds in latencies),
    }


def compare(old: list[Sample], product: list[Sample]) -> dict[str, Any]:
    """Both sides' summaries and A/B of their p50s."""
    sides = {"old": summary(old), "product": summary(product)}
    return {**sides, "ratio": round(sides["old"]["p50_ms"] / sides["product"]["p50_ms"], 2)}


async def explain(database_url: str, key: str, value: str, limit: int) -> tuple[str, list[str]]:
    """The SQL `list_page` issues for this filter, and its EXPLAIN ANALYZE lines."""
    connection = await asyncpg.connect(database_url, timeout=10)
    issued: list[Any] = []
    try:
        with connection.query_logger(issued.append):
            await product_form(connection, key, value, limit, timeout_s=60)
            await asyncio.sleep(0)  # asyncpg hands the record to loggers with call_soon
        sql, args = issued[-1].query, issued[-1].args
        rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args, timeout=60)
    finally:
        await connection.close(timeout=10)
    return sql, [row[0] for row in rows]


def uses_gin(plan: list[str]) -> bool:
    return any("Bitmap Index Scan" in line and GIN_INDEX in line for line in plan)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    chosen = filters(options.queries, records=options.records)
    with harness.environment() as env:
        seed_s = harness.run_async(seed(env.database_url, options.records))
        samples, plan_kinds = harness.run_async(
            measure(env.database_url, chosen, limit=options.limit, timeout_s=options.timeout)
        )
        plans = {
            name: harness.run_async(explain(env.database_url, key, value, options.limit))
            for name, key, value in (next(entry for entry in chosen if entry[0] == name) for name in CLASSES)
        }
        info = harness.machine(env)
    by_class = {
        name: compare(*([entry for entry in samples[side] if entry[0] == name] for side in ("A", "B")))
        for name in CLASSES
    }
    shown = next(entry for entry in chosen if entry[0] == "account")
    sql, plan = plans["account"]
    result = {
        "benchmark": "filters",
        "records": options.records,
        "queries": options.queries,
        "limit": options.limit,
        "timeout_s": options.timeout,
        "api_list_timeout_s": API_LIST_TIMEOUT_S,
        "seed_s": round(seed_s, 1),
        **compare(samples["A"], samples["B"]),
        "by_class": by_class,
        "plans_run": plan_kinds,
        "gin_by_class": {name: uses_gin(plan) for name, (_, plan) in plans.items()},
        "explain": {"filter": f"{shown[1]}={shown[2]}", "sql": sql, "plan": plan},
        "machine": info,
    }
    harness.emit(result, text(result, options), options, HEADLINE)
    return result


def text(result: dict[str, Any], options: argparse.Namespace) -> str:
    def cells(side: dict[str, Any]) -> str:
        late = f"  timeouts {side['timeouts']}" if side["timeouts"] else ""
        return f"p50 {side['p50_ms']:9.2f} ms  p99 {side['p99_ms']:9.2f} ms  {side['per_s']:9,.1f} q/s{late}"

    lines = [
        f"data.<key>=<value> filters over {options.records:,} records (seeded in {result['seed_s']} s), "
        f"{options.queries} filters a side, one at a time, LIMIT {options.limit} in id order",
        f"  A data ->> key = value      {cells(result['old'])}",
        f"  B catalog.list_page (@>)    {cells(result['product'])}",
    ]
    for name, sides in result["by_class"].items():
        lines.append(f"  {name:<8} ({sides['old']['queries']:>3}) A {cells(sides['old'])}")
        lines.append(f"  {'':<8}       B {cells(sides['product'])}  A/B p50 {sides['ratio']:,.1f}")
    over = (result["old"]["over_api_list_timeout"], result["product"]["over_api_list_timeout"])
    gin = ", ".join(f"{name} {'yes' if used else 'no'}" for name, used in result["gin_by_class"].items())
    kinds = ", ".join(f"{side} {run['custom']}/{run['generic']}" for side, run in result["plans_run"].items())
    lines += [
        f"  ratio A/B of p50 {result['ratio']:,.1f} (the indexed form is that many times faster)",
        f"  over the API's {API_LIST_TIMEOUT_S:g} s list limit: A {over[0]}, B {over[1]}",
        f"  Bitmap Index Scan on {GIN_INDEX} in B's plan: {gin}",
        f"  plans run (custom/generic): {kinds}",
        f"  EXPLAIN ANALYZE of B, data.{result['explain']['filter']}:",
        *(f"    {line}" for line in result["explain"]["plan"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
