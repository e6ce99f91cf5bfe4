"""Bulk ingest: raw COPY into the catalog (side A) against NDJSON through `POST /api/v1/records:bulk` (B).

    uv run python bench/ingest.py [--records 100000] [--batch 5000] [--clients 2] [--json]

Both sides write the same rows into a freshly truncated catalog. B runs the real server (granian or
uvicorn, as `sophia.api.server` starts it) and streams each batch from a generator, so neither the
client nor the server holds a whole request body.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import harness
import httpx
import orjson

GOAL = 0.6
CHUNK_BYTES = 64 * 1024


HEADLINE = harness.Headline(
    anchor="raw asyncpg COPY",
    subject="`POST /api/v1/records:bulk`, NDJSON",
    a=harness.Figure("raw.per_s", "rows/s"),
    b=harness.Figure("api.per_s", "rows/s"),
    goals=(harness.Goal(f"B/A ≥ {GOAL}", at_least=GOAL),),
    section="Results",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="rows written by each side")
    parser.add_argument("--batch", type=int, default=5_000, help="NDJSON lines per request (side B)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients (side B)")
    parser.add_argument("--server", default=harness.DEFAULT_SERVER, choices=("granian", "uvicorn"))
    parser.add_argument("--workers", type=int, default=harness.DEFAULT_WORKERS, help="API processes")
    harness.add_common_arguments(parser, rounds=5)
    options = parser.parse_args(argv)
    if min(options.records, options.batch, options.clients, options.rounds) < 1:
        parser.error("--records, --batch, --clients and --rounds must be >= 1")
    return options


async def raw_copy(database_url: str, rows: list[dict[str, Any]]) -> harness.Measurement:
    """Side A: one COPY over one plain asyncpg connection."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        started = time.perf_counter()
        await harness.copy_rows(connection, rows)
        seconds = time.perf_counter() - started
    finally:
        await connection.close(timeout=10)
    return harness.Measurement(len(rows), seconds)


async def ndjson(rows: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The rows as NDJSON, serialized as they are sent, in chunks of about CHUNK_BYTES."""
    chunk: list[bytes] = []
    size = 0
    for row in rows:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        chunk.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(chunk)
            chunk.clear()
            size = 0
    if chunk:
        yield b"".join(chunk)


async def api_bulk(
    base_url: str, token: str, rows: list[dict[str, Any]], batch: int, clients: int
) -> harness.Measurement:
    """Side B: `clients` tasks take batches in turn and stream each as one bulk request."""
    batches = iter([rows[start : start + batch] for start in range(0, len(rows), batch)])
    created = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    timeout = httpx.Timeout(300.0, connect=5.0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal created
        for lines in batches:  # shared iterator: each batch goes to exactly one client
            response = await client.post("/api/v1/records:bulk", content=ndjson(lines))
            if response.status_code != 200:
                raise RuntimeError(f"bulk request failed: {response.status_code} {response.text[:500]}")
            created += response.json()["created"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=timeout, limits=limits
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        seconds = time.perf_counter() - started
    if created != len(rows):
        raise RuntimeError(f"the API created {created} records, not {len(rows)}")
    return harness.Measurement(len(rows), seconds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    rows = harness.catalog_rows(options.records)
    raw_rounds: list[harness.Measurement] = []
    api_rounds: list[harness.Measurement] = []
    with (
        harness.environment() as env,
        harness.ApiServer(env, server=options.server, workers=options.workers) as server,
    ):
        for _ in range(options.rounds):  # interleaved, so a noisy neighbour hits both sides alike
            harness.run_async(harness.truncate(env.database_url))
            harness.settle(options.settle)
            with harness.OtherCpu() as other_cpu:
                raw = harness.run_async(raw_copy(env.database_url, rows))
            raw_rounds.append(replace(raw, other_cpu=other_cpu.share))
            harness.run_async(harness.truncate(env.database_url))
            harness.settle(options.settle)
            with harness.OtherCpu() as other_cpu:
                api = harness.run_async(
                    api_bulk(server.base_url, env.admin_key, rows, options.batch, options.clients)
                )
            api_rounds.append(replace(api, other_cpu=other_cpu.share))
            stored = harness.run_async(harness.count_rows(env.database_url))
            if stored != len(rows):
                raise RuntimeError(f"the catalog holds {stored} rows after side B, not {len(rows)}")
        raw, api = harness.median(raw_rounds), harness.median(api_rounds)
        result = {
            "benchmark": "ingest",
            "records": options.records,
            "batch": options.batch,
            "clients": options.clients,
            "server": options.server,
            "workers": options.workers,
            "rounds": options.rounds,
            **harness.comparison(raw_rounds, api_rounds, GOAL, env),
        }
    text = "\n".join(
        (
            f"ingest of {options.records:,} rows, median of {options.rounds} interleaved rounds",
            harness.side_line("A raw asyncpg COPY", raw, "rows"),
            harness.side_line("B API records:bulk", api, "rows"),
            f"  B: {options.batch:,} lines a request, {options.clients} clients, "
            f"{options.server} x{options.workers}",
            f"  ratio B/A {result['ratio']:.2f} (goal >= {GOAL})",
        )
    )
    harness.emit(result, text, options, HEADLINE)
    return result


if __name__ == "__main__":
    main()
