"""Engines and a benchmark's own migrated database, synthetic catalog rows and seeding."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import nats
import orjson
import redis.asyncio as redis
import structlog

from sophia.database import keys
from sophia.database.catalog import CATALOG
from sophia.database.migrations import migrate
from sophia.engines import EnginesThread, EngineUrls
from sophia.shared.logging import configure_logging
from sophia.shared.settings import Settings

HOST = "127.0.0.1"
DEFAULT_SERVER = Settings.model_fields["api_server"].default
DEFAULT_WORKERS = Settings.model_fields["api_workers"].default
WRK_INSTALL = "apt-get install -y wrk"
STAGES = ("open", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin", "contractsent")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Soylent", "Tyrell")
PRODUCTS = ("renewal", "expansion", "pilot", "platform", "support plan", "new logo")

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh uvloop loop (the API's loop, so both sides get the same one)."""
    import uvloop

    return uvloop.run(coroutine)


@dataclass(frozen=True)
class Environment:
    """Engines ready for one benchmark: its own migrated database and an admin API key."""

    database_url: str
    redis_url: str
    nats_url: str
    admin_key: str
    postgres_version: str
    valkey_version: str
    nats_version: str
    work_dir: Path
    load_average_1m: float
    """The machine's load when the run began: above ~0.5, something else competes for the CPUs."""

    def server_env(self) -> dict[str, str]:
        return EngineUrls(self.database_url, self.redis_url, self.nats_url).as_env()


async def _admin(base_url: str, sql: str) -> None:
    connection = await asyncpg.connect(base_url, timeout=10)
    try:
        await connection.execute(sql, timeout=60)
    finally:
        await connection.close(timeout=10)


async def _prepare(database_url: str) -> tuple[str, str]:
    """Migrate the fresh database; return (an admin key's secret, the server version)."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(connection)
        _, secret = await keys.create(connection, "bench-admin", "admin")
        version = await connection.fetchval("SHOW server_version", timeout=10)
    finally:
        await connection.close(timeout=10)
    return secret, str(version)


async def _versions(redis_url: str, nats_url: str) -> tuple[str, str]:
    """Valkey's and NATS's versions as the servers report them, configured engines included."""
    client = redis.Redis.from_url(redis_url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    servers = [url.strip() for url in nats_url.split(",") if url.strip()]
    connection = await nats.connect(servers=servers, name="sophia-bench", connect_timeout=5)
    try:
        server = connection.connected_server_version
        nats_version = f"{server.major}.{server.minor}.{server.patch}"
    finally:
        await connection.close()
    return str(info.get("valkey_version") or info.get("redis_version", "unknown")), nats_version


@contextmanager
def environment() -> Iterator[Environment]:
    """Engines (configured or embedded, non-durable) and a database for this run only."""
    if not structlog.is_configured():  # keep the engines' log lines off stdout (--json prints there)
        configure_logging("WARNING", json=False)
    load_average_1m = os.getloadavg()[0]
    work_dir = Path(tempfile.mkdtemp(prefix="sophia-bench-"))
    engines = EnginesThread(Settings(data_dir=work_dir), durable=False)
    name = f"sophia_bench_{os.getpid()}_{time.monotonic_ns() % 1_000_000}"
    created = False
    try:
        urls = engines.start()
        run_async(_admin(urls.database_url, f'CREATE DATABASE "{name}"'))
        created = True
        database_url = urls.database_url.rsplit("/", 1)[0] + f"/{name}"
        admin_key, postgres_version = run_async(_prepare(database_url))
        valkey_version, nats_version = run_async(_versions(urls.redis_url, urls.nats_url))
        yield Environment(
            database_url,
            urls.redis_url,
            urls.nats_url,
            admin_key,
            postgres_version,
            valkey_version,
            nats_version,
            work_dir,
            load_average_1m,
        )
    finally:
        if created:
            run_async(_admin(urls.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engines.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


async def truncate(database_url: str) -> None:
    """Empty the catalog and the outbox, then checkpoint so each side starts from the same state."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await connection.execute(f"TRUNCATE {CATALOG}, sophia_core.outbox", timeout=60)
        await connection.execute("CHECKPOINT", timeout=60)
    finally:
        await connection.close(timeout=10)


def catalog_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` deterministic CRM deals as bulk-ingest lines, about 330 bytes each as NDJSON."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        company = rng.choice(COMPANIES)
        rows.append(
            {
                "source_system": "bench",
                "kind": "deal",
                "external_id": f"deal-{index:08d}",
                "data": {
                    "dealname": f"{company} {rng.choice(PRODUCTS)} {index}",
                    "amount": f"{rng.randint(500, 250_000)}.00",
                    "currency": rng.choice(("EUR", "USD", "GBP")),
                    "dealstage": rng.choice(STAGES),
                    "pipeline": rng.choice(("default", "enterprise", "partner")),
                    "probability": round(rng.random(), 2),
                    "closedate": f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "hubspot_owner_id": str(rng.randint(1000, 1099)),
                    "company": f"{company} {rng.choice(('Inc', 'GmbH', 'Ltd', 'SA'))}",
                },
            }
        )
    return rows


async def copy_rows(connection: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """Raw COPY of `rows` into the catalog (no staging, no outbox): the floor any ingest path pays."""
    records = (
        (row["source_system"], row["kind"], row["external_id"], orjson.dumps(row["data"]).decode())
        for row in rows
    )
    await connection.copy_records_to_table(
        "unified_data_catalog",
        schema_name="sophia_core",
        records=records,
        columns=("source_system", "kind", "external_id", "data"),
        timeout=600,
    )


async def seed(database_url: str, records: int) -> list[str]:
    """Fill an emptied catalog by COPY and analyze it; return the ids it holds."""
    await truncate(database_url)
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await copy_rows(connection, catalog_rows(records))
        await connection.execute(f"VACUUM ANALYZE {CATALOG}", timeout=120)
        return [str(row["id"]) for row in await connection.fetch(f"SELECT id FROM {CATALOG}", timeout=60)]
    finally:
        await connection.close(timeout=10)


async def count_rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {CATALOG}", timeout=60))
    finally:
        await connection.close(timeout=10)
