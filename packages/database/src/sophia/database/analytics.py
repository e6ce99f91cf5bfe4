"""Sales analytics kept incrementally: the summaries of `sophia_analytics` (migration 0015) moved
forward deal by deal from the catalog's events, and rebuilt whole on demand.

`apply_deal_changes` is the consumer's step. For each deal a batch names it reads the deal's row
now (`current_deal_facts`, a function of the catalog row alone) and what the summaries hold of it
(`deal_facts`, with the version read and the last stage-history row counted), and moves every
summary by the difference, in one transaction. A replay, a late event or an event older than what
was read changes nothing: the difference is then zero. `rebuild` recomputes the same tables from
the catalog and the stage history with plain SQL, and must agree with it exactly (a property test
holds the two to that).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sophia.core.errors import FieldError, Invalid
from sophia.database.pool import Connection

ADVISORY_NAMESPACE = 0x5A17
"""First key of the per-deal advisory locks: one batch at a time moves a deal's contributions."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What one step did: deals whose contributions moved, and stage changes counted."""

    deals: int
    stage_changes: int


class _Deltas:
    """Sums to add per summary row, keyed by the row's key."""

    def __init__(self, width: int) -> None:
        self.rows: defaultdict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * width)

    def add(self, key: tuple[Any, ...], *values: Any) -> None:
        row = self.rows[key]
        for index, value in enumerate(values):
            row[index] += value

    def columns(self, key_width: int) -> list[list[Any]]:
        """Column arrays for `unnest`, in key order (the order rows are locked in)."""
        ordered = sorted(self.rows.items())
        keys = [[key[i] for key, _ in ordered] for i in range(key_width)]
        values = [[row[i] for _, row in ordered] for i in range(len(ordered[0][1]))] if ordered else []
        return keys + values


async def apply_deal_changes(
    connection: Connection, deal_ids: Iterable[UUID], as_of: datetime | None = None
) -> Applied:
    """Bring the summaries up to date with the deals `deal_ids` as they are now (idempotent);
    `as_of`, the time of the newest change in hand, moves their freshness forward.

    One call of the database function of the same name (migration 0019): it reads each deal's
    facts now and what the summaries hold of it, with its stage history after the last row
    counted, and moves every summary by the difference, in one statement."""
    ids = list(deal_ids)  # the function drops repeats and sorts them (its lock order)
    if not ids and as_of is None:
        return Applied(0, 0)
    (row,) = await connection.fetch(
        "SELECT deals, stage_changes FROM sophia_analytics.apply_deal_changes($1::uuid[], $2)", ids, as_of
    )
    return Applied(row["deals"], row["stage_changes"])


_CONVERSATION_COLUMNS = ("record_id", "source_system", "kind", "week", "deleted", "sentiment", "labels")


async def apply_conversation_changes(
    connection: Connection, record_ids: Iterable[UUID], as_of: datetime | None = None
) -> int:
    """Bring the sentiment and topic trends up to date with the calls and messages `record_ids`
    (their records and their latest predictions) as they are now; returns how many moved. The
    difference from what is counted is applied, so any replay or order comes to the same end."""
    ids = sorted(set(record_ids))
    if not ids:
        return 0
    async with connection.transaction():
        await _lock(connection, ids)
        stored, current = await _facts(connection, _CONVERSATION_COLUMNS, "conversation_facts", ids)
        sentiments, topics = _Deltas(1), _Deltas(1)
        moved: list[tuple[Any, ...]] = []
        for before, now in _changed(ids, stored, current):
            for facts, sign in _counted(before, now):
                where = (facts["source_system"], facts["kind"], facts["week"])
                if facts["sentiment"] is not None:
                    sentiments.add((*where, facts["sentiment"]), sign)
                for label in facts["labels"]:
                    topics.add((*where, label), sign)
            moved.append(tuple(now))
        keys = ("source_system", "kind", "week")
        await _move_summary(connection, "sentiment_summary", (*keys, "sentiment"), ("records",), sentiments)
        await _move_summary(connection, "topic_summary", (*keys, "label"), ("records",), topics)
        await _upsert_facts(connection, "conversation_facts", _CONVERSATION_COLUMNS, moved)
        await _move_freshness(connection, as_of)
        return len(moved)


SUMMARY_TABLES = (
    "deal_facts",
    "deal_summary",
    "closed_summary",
    "stage_summary",
    "conversation_facts",
    "sentiment_summary",
    "topic_summary",
    "activity_facts",
    "activity_summary",
)
"""What the consumers keep and a rebuild recomputes (in the order the consumers lock them)."""
_REBUILT = ", ".join(f"sophia_analytics.{table}" for table in (*SUMMARY_TABLES, "freshness"))
_ACTIVITY_COLUMNS = ("record_id", "source_system", "kind", "company", "deleted", "open_deal", "touched_at")


async def apply_activity_changes(
    connection: Connection, record_ids: Iterable[UUID], as_of: datetime | None = None
) -> list[UUID]:
    """Bring the activity per company up to date with the deals, calls and messages `record_ids`
    as they are now. Returns the calls and messages whose company may have moved with a deal whose
    company moved, or that came or went (they name it by `deal_id`): apply them next, in a
    transaction of their own. A deal that only moved stage moves none of them (finding them is a
    join over every call and message: most of the analytics consumer's time under a stream of stage
    changes)."""
    ids = sorted(set(record_ids))
    if not ids:
        return []
    async with connection.transaction():
        await _lock(connection, ids)
        stored, current = await _facts(connection, _ACTIVITY_COLUMNS, "activity_facts", ids)
        counts = _Deltas(3)
        moved: list[tuple[Any, ...]] = []
        followed: list[UUID] = []  # deals the calls and messages naming them may follow
        for before, now in _changed(ids, stored, current):
            for facts, sign in _counted(before, now):
                if facts["company"] is None:
                    continue
                counts.add(
                    (facts["source_system"], facts["company"]),
                    sign * (facts["kind"] == "call"),
                    sign * (facts["kind"] == "message"),
                    sign * facts["open_deal"],
                )
            moved.append(tuple(now))
            if now["kind"] == "deal" and (
                before is None or (before["company"], before["deleted"]) != (now["company"], now["deleted"])
            ):
                followed.append(now["record_id"])
        await _move_summary(
            connection,
            "activity_summary",
            ("source_system", "company"),
            ("calls", "messages", "open_deals"),
            counts,
            empty="calls = 0 AND messages = 0 AND open_deals = 0",
        )
        await _upsert_facts(connection, "activity_facts", _ACTIVITY_COLUMNS, moved)
        if counts.rows:  # the last touch is a maximum: read again where anything moved
            companies = sorted(counts.rows)
            await connection.execute(
                "UPDATE sophia_analytics.activity_summary AS s SET last_touch = ("
                "SELECT max(f.touched_at) FROM sophia_analytics.activity_facts AS f "
                "WHERE f.source_system = s.source_system AND f.company = s.company "
                "AND NOT f.deleted AND f.touched_at IS NOT NULL) "
                "FROM unnest($1::text[], $2::text[]) AS k(source_system, company) "
                "WHERE s.source_system = k.source_system AND s.company = k.company",
                [source for source, _ in companies],
                [company for _, company in companies],
            )
        await _move_freshness(connection, as_of)
        if not followed:
            return []
        rows = await connection.fetch(
            "SELECT t.id FROM sophia_core.unified_data_catalog AS d "
            "JOIN sophia_core.unified_data_catalog AS t ON t.source_system = d.source_system "
            "AND t.kind IN ('call', 'message') AND t.data @> jsonb_build_object('deal_id', d.external_id) "
            "WHERE d.id = ANY($1::uuid[])",
            followed,
        )
        return [row["id"] for row in rows]


async def _by_id(connection: Connection, query: str, ids: list[UUID]) -> dict[UUID, Any]:
    """The rows of `query` (its first column an id, `$1` the ids asked for) by that id."""
    return {row[0]: row for row in await connection.fetch(query, ids)}


async def _facts(
    connection: Connection, columns: tuple[str, ...], table: str, ids: list[UUID]
) -> tuple[dict[UUID, Any], dict[UUID, Any]]:
    """What is counted of each record (`table`) and what it is now (the view `current_<table>`)."""
    names, where = ", ".join(columns), f"WHERE {columns[0]} = ANY($1::uuid[])"
    stored = await _by_id(connection, f"SELECT {names} FROM sophia_analytics.{table} {where}", ids)
    current = await _by_id(connection, f"SELECT {names} FROM sophia_analytics.current_{table} {where}", ids)
    return stored, current


def _changed(ids: list[UUID], stored: dict[UUID, Any], current: dict[UUID, Any]) -> Iterator[tuple[Any, Any]]:
    """(what is counted, what it is now) of each record in `ids` whose facts moved; a record gone
    from its view (no longer a call, message or deal) keeps what is counted."""
    for record_id in ids:
        before, now = stored.get(record_id), current.get(record_id)
        if now is None or (before is not None and tuple(before) == tuple(now)):
            continue
        yield before, now


def _counted(before: Any, now: Any) -> Iterator[tuple[Any, int]]:
    """The facts to count out (-1) and in (+1): those of a record that exists and is not deleted."""
    for facts, sign in ((before, -1), (now, +1)):
        if facts is not None and not facts["deleted"]:
            yield facts, sign


async def _upsert_facts(
    connection: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Store `rows` (one per record, the record's id first) as what `table` now counts."""
    if not rows:
        return
    await connection.executemany(
        f"INSERT INTO sophia_analytics.{table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET "
        + ", ".join(f"{name} = excluded.{name}" for name in columns[1:]),
        rows,
    )


async def _lock(connection: Connection, ids: list[UUID]) -> None:
    """Per-record advisory locks until the transaction ends, taken in `ids`' order (sorted): one
    batch at a time moves a record's contributions, and two batches cannot deadlock."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(id::text)) FROM unnest($2::uuid[]) AS id",
        ADVISORY_NAMESPACE,
        ids,
    )


async def _move_freshness(connection: Connection, as_of: datetime | None) -> None:
    """The summaries now hold changes up to `as_of` (it only moves forward)."""
    if as_of is not None:
        await connection.execute("UPDATE sophia_analytics.freshness SET as_of = greatest(as_of, $1)", as_of)


_SQL_TYPES = {
    "week": "date",
    "records": "bigint",
    "calls": "bigint",
    "messages": "bigint",
    "open_deals": "bigint",
}
"""The type of each summary column in the arrays `_move_summary` unnests (text where absent)."""


async def _move_summary(
    connection: Connection,
    table: str,
    key: tuple[str, ...],
    sums: tuple[str, ...],
    deltas: _Deltas,
    *,
    empty: str | None = None,
) -> None:
    """Add `deltas` to the summary's rows (made where missing), then drop the rows left empty: a
    rebuild has no row for a group without deals."""
    if not deltas.rows:
        return
    columns = deltas.columns(len(key))
    names = (*key, *sums)
    arrays = ", ".join(f"${i + 1}::{_SQL_TYPES.get(name, 'text')}[]" for i, name in enumerate(names))
    await connection.execute(
        f"INSERT INTO sophia_analytics.{table} AS s ({', '.join(names)}) "
        f"SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{name} = s.{name} + excluded.{name}" for name in sums),
        *columns,
    )
    width = len(key)
    keys = ", ".join(f"${i + 1}::{_SQL_TYPES.get(name, 'text')}[]" for i, name in enumerate(key))
    await connection.execute(
        f"DELETE FROM sophia_analytics.{table} AS s USING unnest({keys}) AS k({', '.join(key)}) "
        f"WHERE ({', '.join(f's.{name}' for name in key)}) = ({', '.join(f'k.{name}' for name in key)}) "
        f"AND {empty or sums[0] + ' = 0'}",
        *columns[:width],
    )


async def rebuild(
    connection: Connection,
    progress: Callable[[str], None] = lambda _: None,
    timeout_s: float | None = None,
) -> tuple[int, int, int]:
    """Recompute every summary from the catalog, the stage history and the predictions, in one
    transaction: the consumer's batches wait for it and go on from what it wrote. Returns (deals,
    stage changes, calls and messages);
    `timeout_s` bounds each of its two statements."""
    async with connection.transaction():
        # Every table first, the consumers' row of freshness last (they update it at the end of
        # their transactions): a batch in flight finishes, and none can wait on the rebuild while
        # holding what it waits for.
        await connection.execute(f"LOCK TABLE {_REBUILT} IN ACCESS EXCLUSIVE MODE", timeout=timeout_s)
        progress("deals: summarizing the catalog's deals")
        deals = await connection.fetchval("SELECT sophia_analytics.rebuild_facts()", timeout=timeout_s)
        progress(f"deals: {deals:,} summarized; stage history: summarizing")
        changes = await connection.fetchval("SELECT sophia_analytics.rebuild_stages()", timeout=timeout_s)
        progress(f"stage history: {changes:,} stage changes summarized; calls and messages: summarizing")
        talks = await connection.fetchval(
            "SELECT sophia_analytics.rebuild_conversations()", timeout=timeout_s
        )
        progress(f"calls and messages: {talks:,} summarized; activity per company: summarizing")
        companies = await connection.fetchval("SELECT sophia_analytics.rebuild_activity()", timeout=timeout_s)
        progress(f"activity: {companies:,} companies; analyzing the summaries")
    # Statistics for the tables just filled, before the consumers' next batch is planned: without
    # them, a lookup of a batch's deals in a table just filled was planned as a scan of the whole
    # table (44 ms a batch of 1,000 at 200,000 deals, against about 3 by its primary key).
    await connection.execute(f"ANALYZE {_REBUILT}", timeout=timeout_s)
    return int(deals), int(changes), int(talks)


@dataclass(frozen=True, slots=True)
class Filters:
    """What an answer covers: months from `since` to `until` (both included; None: unbounded), and
    deals of one source system, owner or pipeline where given."""

    since: date | None = None
    until: date | None = None
    source_system: str | None = None
    owner: str | None = None
    pipeline: str | None = None

    def where(self, month: str, args: list[Any], table: str = "s") -> str:
        """SQL conditions on a summary aliased `table` whose month column is `month`."""
        clauses = ["true"]
        for name in ("source_system", "owner", "pipeline"):
            value = getattr(self, name)
            if value is not None:
                args.append(value)
                clauses.append(f"{table}.{name} = ${len(args)}")
        if self.since is not None:
            args.append(self.since.replace(day=1))
            clauses.append(f"{table}.{month} >= ${len(args)}")
        if self.until is not None:
            args.append(self.until.replace(day=1))
            clauses.append(f"{table}.{month} <= ${len(args)}")
        return " AND ".join(clauses)


def check_range(since: date | None, until: date | None) -> None:
    """`Invalid`, located at the query's `to`, when the range ends before it begins."""
    if since is not None and until is not None and until < since:
        detail = f"`to` ({until}) is before `from` ({since})."
        raise Invalid(detail, [FieldError(("query", "to"), detail)])


async def as_of(connection: Connection) -> datetime | None:
    """The time of the newest change the summaries hold (None: they hold none yet)."""
    value = await connection.fetchval(
        "SELECT nullif(as_of, '-infinity'::timestamptz) FROM sophia_analytics.freshness"
    )
    return value if isinstance(value, datetime) else None


async def pipeline(connection: Connection, filters: Filters) -> list[dict[str, Any]]:
    """Open deals by stage (created in the months asked): count, amount, and amount weighted by
    the stage's probability; in funnel order."""
    args: list[Any] = []
    rows = await connection.fetch(
        "SELECT s.stage, sum(s.deals) AS deals, sum(s.amount) AS amount, "
        "sum(s.amount * coalesce(p.probability, 0)) AS weighted_amount, "
        "min(coalesce(p.position, 2147483647)) AS position "
        "FROM sophia_analytics.deal_summary AS s "
        "LEFT JOIN sophia_analytics.stage_probabilities AS p "
        "ON p.pipeline = s.pipeline AND p.stage = s.stage "
        f"WHERE s.status = 'open' AND {filters.where('created_month', args)} "
        "GROUP BY s.stage ORDER BY position, s.stage",
        *args,
    )
    return [
        {
            "stage": row["stage"],
            "deals": row["deals"],
            "amount": row["amount"],
            "weighted_amount": row["weighted_amount"],
        }
        for row in rows
    ]


def _closed_figures(won: int, lost: int, won_amount: Decimal, won_cycle_days: int) -> dict[str, Any]:
    return {
        "won": won,
        "lost": lost,
        "win_rate": won / (won + lost) if won + lost else None,
        "average_deal_size": won_amount / won if won else None,
        "average_cycle_days": won_cycle_days / won if won else None,
    }


_CLOSED_SUMS = (
    "sum(s.deals) FILTER (WHERE s.status = 'won') AS won, "
    "sum(s.deals) FILTER (WHERE s.status = 'lost') AS lost, "
    "sum(s.amount) FILTER (WHERE s.status = 'won') AS won_amount, "
    "sum(s.cycle_days) FILTER (WHERE s.status = 'won') AS won_cycle_days"
)


def _figures(row: Any) -> dict[str, Any]:
    return _closed_figures(
        int(row["won"] or 0),
        int(row["lost"] or 0),
        row["won_amount"] or Decimal(0),
        int(row["won_cycle_days"] or 0),
    )


async def win_rate(connection: Connection, filters: Filters) -> dict[str, Any]:
    """Deals won and lost in the months asked (by closing month): win rate = won / (won + lost),
    average size and cycle of the won ones; in all, by owner and by month."""
    args: list[Any] = []
    where = filters.where("closed_month", args)
    total = await connection.fetchrow(
        f"SELECT {_CLOSED_SUMS} FROM sophia_analytics.closed_summary AS s WHERE {where}", *args
    )
    owners = await connection.fetch(
        f"SELECT s.owner, {_CLOSED_SUMS} FROM sophia_analytics.closed_summary AS s WHERE {where} "
        "GROUP BY s.owner ORDER BY s.owner",
        *args,
    )
    months = await connection.fetch(
        f"SELECT s.closed_month, {_CLOSED_SUMS} FROM sophia_analytics.closed_summary AS s WHERE {where} "
        "GROUP BY s.closed_month ORDER BY s.closed_month",
        *args,
    )
    return {
        **_figures(total),
        "by_owner": [{"owner": row["owner"], **_figures(row)} for row in owners],
        "by_month": [{"month": row["closed_month"], **_figures(row)} for row in months],
    }


async def velocity(connection: Connection, filters: Filters) -> dict[str, Any]:
    """Sales velocity = open deals x average won size x win rate / average cycle days: the amount
    the pipeline turns into wins per day, at the pace of the months asked."""
    args: list[Any] = []
    closed = _figures(
        await connection.fetchrow(
            f"SELECT {_CLOSED_SUMS} FROM sophia_analytics.closed_summary AS s "
            f"WHERE {filters.where('closed_month', args)}",
            *args,
        )
    )
    open_args: list[Any] = []
    anytime = replace(filters, since=None, until=None)  # open now, whenever created
    open_deals = await connection.fetchval(
        "SELECT coalesce(sum(s.deals), 0) FROM sophia_analytics.deal_summary AS s "
        f"WHERE s.status = 'open' AND {anytime.where('created_month', open_args)}",
        *open_args,
    )
    parts = (closed["average_deal_size"], closed["win_rate"], closed["average_cycle_days"])
    per_day = (
        float(open_deals) * float(parts[0]) * parts[1] / parts[2] if None not in parts and parts[2] else None
    )
    return {"open_deals": int(open_deals), **closed, "velocity_per_day": per_day}


async def cohorts(connection: Connection, filters: Filters) -> list[dict[str, Any]]:
    """Deals by the month they were created: how many are won, lost and still open."""
    args: list[Any] = []
    rows = await connection.fetch(
        "SELECT s.created_month, "
        "sum(s.deals) FILTER (WHERE s.status = 'open') AS open, "
        "sum(s.deals) FILTER (WHERE s.status = 'won') AS won, "
        "sum(s.deals) FILTER (WHERE s.status = 'lost') AS lost "
        f"FROM sophia_analytics.deal_summary AS s WHERE {filters.where('created_month', args)} "
        "GROUP BY s.created_month ORDER BY s.created_month",
        *args,
    )
    return [
        {"month": row["created_month"], **{name: int(row[name] or 0) for name in ("open", "won", "lost")}}
        for row in rows
    ]


async def funnel(connection: Connection, filters: Filters) -> list[dict[str, Any]]:
    """Per stage, in funnel order: deals reaching it for the first time in the months asked, the
    share of the previous stage's that is, and the average days spent in it before moving on."""
    args: list[Any] = []
    rows = await connection.fetch(
        "SELECT s.stage, sum(s.reached) AS reached, sum(s.entered) AS entered, sum(s.exited) AS exited, "
        "sum(s.seconds_in_stage) AS seconds, min(coalesce(p.position, 2147483647)) AS position "
        "FROM sophia_analytics.stage_summary AS s "
        "LEFT JOIN sophia_analytics.stage_probabilities AS p "
        "ON p.pipeline = s.pipeline AND p.stage = s.stage "
        f"WHERE {filters.where('month', args)} "
        "GROUP BY s.stage ORDER BY position, s.stage",
        *args,
    )
    stages: list[dict[str, Any]] = []
    previous: int | None = None
    for row in rows:
        reached = int(row["reached"])
        stages.append(
            {
                "stage": row["stage"],
                "reached": reached,
                "entered": int(row["entered"]),
                "conversion": reached / previous if previous else None,
                "average_days_in_stage": float(row["seconds"]) / int(row["exited"]) / 86400
                if row["exited"]
                else None,
            }
        )
        previous = reached
    return stages


@dataclass(frozen=True, slots=True)
class TrendFilters:
    """What a trend covers: weeks from `since` to `until` (both included; None: unbounded), calls
    and messages of one source system or kind where given."""

    since: date | None = None
    until: date | None = None
    source_system: str | None = None
    kind: str | None = None

    def where(self, args: list[Any]) -> str:
        clauses = ["true"]
        for name in ("source_system", "kind"):
            value = getattr(self, name)
            if value is not None:
                args.append(value)
                clauses.append(f"s.{name} = ${len(args)}")
        if self.since is not None:
            args.append(self.since - timedelta(days=self.since.weekday()))
            clauses.append(f"s.week >= ${len(args)}")
        if self.until is not None:
            args.append(self.until - timedelta(days=self.until.weekday()))
            clauses.append(f"s.week <= ${len(args)}")
        return " AND ".join(clauses)


async def _trend(
    connection: Connection, table: str, label: str, filters: TrendFilters
) -> list[dict[str, Any]]:
    args: list[Any] = []
    rows = await connection.fetch(
        f"SELECT s.week, s.{label} AS label, sum(s.records) AS records FROM sophia_analytics.{table} AS s "
        f"WHERE {filters.where(args)} GROUP BY s.week, s.{label} ORDER BY s.week, s.{label}",
        *args,
    )
    weeks: dict[date, dict[str, int]] = {}
    for row in rows:
        weeks.setdefault(row["week"], {})[row["label"]] = int(row["records"])
    return [{"week": week, "counts": counts} for week, counts in weeks.items()]


async def sentiment(connection: Connection, filters: TrendFilters) -> list[dict[str, Any]]:
    """Per week (Monday), calls and messages by the sentiment the model gave them."""
    return await _trend(connection, "sentiment_summary", "sentiment", filters)


async def topics(connection: Connection, filters: TrendFilters) -> list[dict[str, Any]]:
    """Per week (Monday), calls and messages by topic label (one may carry several)."""
    return await _trend(connection, "topic_summary", "label", filters)


@dataclass(frozen=True, slots=True)
class CompanyFilters:
    """Which companies, and in what order: the most recently touched first, or the most calls,
    messages or open deals first."""

    source_system: str | None = None
    company: str | None = None
    order: str = "last_touch"
    limit: int = 50


ACTIVITY_ORDERS = ("last_touch", "calls", "messages", "open_deals")


async def companies(connection: Connection, filters: CompanyFilters) -> list[dict[str, Any]]:
    """Activity per company: calls, messages, open deals and the last call or message."""
    if filters.order not in ACTIVITY_ORDERS:
        raise ValueError(f"order is one of {', '.join(ACTIVITY_ORDERS)}")
    args: list[Any] = []
    clauses = ["true"]
    for name in ("source_system", "company"):
        value = getattr(filters, name)
        if value is not None:
            args.append(value)
            clauses.append(f"s.{name} = ${len(args)}")
    args.append(filters.limit)
    rows = await connection.fetch(
        "SELECT s.source_system, s.company, s.calls, s.messages, s.open_deals, s.last_touch "
        f"FROM sophia_analytics.activity_summary AS s WHERE {' AND '.join(clauses)} "
        f"ORDER BY s.{filters.order} DESC NULLS LAST, s.source_system, s.company LIMIT ${len(args)}",
        *args,
    )
    return [dict(row) for row in rows]


async def stage_history_of(connection: Connection, deal_id: UUID) -> list[dict[str, Any]]:
    """A deal's stage changes, oldest first."""
    rows = await connection.fetch(
        """SELECT from_stage, to_stage, at FROM sophia_analytics.stage_history
           WHERE deal_id = $1 ORDER BY id""",
        deal_id,
    )
    return [dict(row) for row in rows]
