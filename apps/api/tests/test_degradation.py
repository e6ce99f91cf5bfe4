"""Degradation on purpose: an engine going down gives 503 + Retry-After, never a 500, and recovery."""

import asyncio

import asyncpg
import httpx
import pytest
from app_clients import app_client
from live_server import live_server

from sophia.database import keys
from sophia.database.migrations import migrate
from sophia.engines.nats import EmbeddedNats
from sophia.engines.postgres import EmbeddedPostgres
from sophia.engines.valkey import EmbeddedValkey

WELL_FORMED_KEY = "sk_0123abcd_" + "A" * 43
PROBE_EVERY_TIME = {"readiness_reuse_s": 0}
"""These tests watch /readyz follow an engine going down: no verdict reused from before."""


async def poll_status(call, want: int, timeout_s: float = 30.0) -> httpx.Response:
    async with asyncio.timeout(timeout_s):
        while (response := await call()).status_code != want:
            await asyncio.sleep(0.1)
    return response


async def start_migrated(postgres: EmbeddedPostgres) -> tuple[str, str]:
    """Start a PostgreSQL of the test's own, migrate it and make an admin key: its URL and key."""
    url = await postgres.start()
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        _, secret = await keys.create(connection, "chaos", "admin")
    finally:
        await connection.close()
    return url, secret


@pytest.mark.chaos
async def test_postgres_down_answers_503_with_retry_after_then_recovers(tmp_path, settings):
    postgres = EmbeddedPostgres(tmp_path, durable=False)
    url, secret = await start_migrated(postgres)
    overrides = {"database_url": url, "breaker_open_s": 0.2, "api_key_cache_ttl_s": 0, **PROBE_EVERY_TIME}
    try:
        async with app_client(settings.model_copy(update=overrides), secret) as client:
            created = await client.put("/api/v1/records/chaos/deal/1", json={"data": {"a": 1}})
            assert created.status_code == 201
            record_url = f"/api/v1/records/{created.json()['id']}"

            await postgres.stop()
            for call in (
                lambda: client.get(record_url),
                lambda: client.put("/api/v1/records/chaos/deal/2", json={"data": {}}),
            ):
                response = await call()
                assert response.status_code == 503
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) >= 1
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["postgres"] != "ok"

            await postgres.start()
            recovered = await poll_status(lambda: client.get(record_url), 200)
            assert recovered.json()["data"] == {"a": 1}
    finally:
        await postgres.stop()


@pytest.mark.chaos
async def test_api_starts_while_postgres_is_down_and_answers_503(settings):
    down = settings.model_copy(update={"database_url": "postgresql://sophia:x@127.0.0.1:9/none"})
    async with app_client(down, WELL_FORMED_KEY) as client:
        assert (await client.get("/api/v1/records")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.chaos
async def test_redis_down_is_reported_by_readyz_while_records_keep_working(tmp_path, settings, api_keys):
    valkey = EmbeddedValkey(tmp_path)
    redis_url = await valkey.start()
    try:
        async with app_client(
            settings.model_copy(update={"redis_url": redis_url, **PROBE_EVERY_TIME}), api_keys["admin"]
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
            cached = await client.put("/api/v1/records/chaos-redis/deal/cached", json={"data": {"v": 1}})
            cached_url = f"/api/v1/records/{cached.json()['id']}"
            assert (await client.get(cached_url)).status_code == 200  # now in L1 and L2

            await valkey.stop()
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["redis"] != "ok"
            assert not_ready.json()["checks"]["postgres"] == "ok"
            written = await client.put("/api/v1/records/chaos-redis/deal/1", json={"data": {}})
            assert written.status_code in (200, 201)
            reads = [
                await client.get(url)
                for url in (cached_url, f"/api/v1/records/{written.json()['id']}", "/api/v1/records")
                for _ in range(5)
            ]
            assert [response.status_code for response in reads] == [200] * 15
            await client.put("/api/v1/records/chaos-redis/deal/cached", json={"data": {"v": 2}})
            assert (await client.get(cached_url)).json()["data"] == {"v": 2}  # dropped locally
    finally:
        await valkey.stop()


@pytest.mark.chaos
async def test_nats_down_is_reported_by_readyz_while_writes_keep_landing_in_the_outbox(
    tmp_path, settings, api_keys, database
):
    nats = EmbeddedNats(tmp_path)
    nats_url = await nats.start()
    try:
        async with app_client(
            settings.model_copy(update={"nats_url": nats_url, **PROBE_EVERY_TIME}), api_keys["admin"]
        ) as client:
            assert (await client.get("/readyz")).json()["checks"]["nats"] == "ok"
            await nats.stop()
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["nats"] != "ok"
            written = await client.put("/api/v1/records/chaos-nats/deal/1", json={"data": {}})
            assert written.status_code in (200, 201)
        async with database.connection() as connection:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM sophia_core.outbox WHERE key = 'chaos-nats/deal/1'"
            )
        assert waiting >= 1
    finally:
        await nats.stop()


@pytest.mark.chaos
async def test_with_postgres_down_a_cached_read_is_served_stale_and_marked(tmp_path, settings):
    postgres = EmbeddedPostgres(tmp_path, durable=False)
    url, secret = await start_migrated(postgres)
    overrides = {
        "database_url": url,
        "cache_ttl_api_s": 0.2,
        "cache_ttl_record_s": 0.2,
        "breaker_open_s": 0.2,
    }
    try:
        async with app_client(settings.model_copy(update=overrides), secret) as client:
            created = await client.put("/api/v1/records/chaos-stale/deal/1", json={"data": {"a": 1}})
            record_url = f"/api/v1/records/{created.json()['id']}"
            fresh = await client.get(record_url)
            listed = await client.get("/api/v1/records", params={"source_system": "chaos-stale"})
            assert "warning" not in fresh.headers

            await postgres.stop()
            stale = await poll_header(lambda: client.get(record_url), "warning")
            assert stale.status_code == 200
            assert stale.headers["warning"] == '110 - "Response is Stale"'
            assert stale.content == fresh.content
            assert stale.headers["etag"] == fresh.headers["etag"]
            stale_list = await client.get("/api/v1/records", params={"source_system": "chaos-stale"})
            assert stale_list.status_code == 200
            assert stale_list.content == listed.content
            never_cached = await client.get("/api/v1/records", params={"source_system": "chaos-other"})
            assert never_cached.status_code == 503

            await postgres.start()
            recovered = await poll_status(lambda: client.get("/api/v1/records/" + "0" * 32), 404)
            assert recovered.headers["content-type"] == "application/problem+json"
    finally:
        await postgres.stop()


async def poll_header(call, header: str, timeout_s: float = 30.0) -> httpx.Response:
    """Call until the response carries `header` (a cached value turning stale takes its TTL)."""
    async with asyncio.timeout(timeout_s):
        while header not in (response := await call()).headers:
            await asyncio.sleep(0.05)
    return response


@pytest.mark.chaos
async def test_postgres_killed_under_concurrent_writes_gives_no_500_and_loses_no_acknowledged_write(
    tmp_path, settings, monkeypatch
):
    postgres = EmbeddedPostgres(tmp_path / "engine")  # durable: an acknowledged write must survive
    url, secret = await start_migrated(postgres)
    # Every request verifies its key in PostgreSQL (no key memory), where the 500 was seen.
    for name, value in {
        "SOPHIA_API_KEY_CACHE_TTL_S": "0",
        "SOPHIA_CACHE_STALE_IF_ERROR_S": "0",
        "SOPHIA_BREAKER_OPEN_S": "0.2",
        "SOPHIA_ML_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    statuses: list[int] = []
    acknowledged: list[str] = []
    killed_at = back_at = 0.0
    stop = asyncio.Event()

    async def writer(http: httpx.AsyncClient, number: int) -> None:
        nonlocal back_at
        sequence = 0
        while not stop.is_set():
            sequence += 1
            external_id = f"w{number}-{sequence}"
            try:
                response = await http.put(
                    f"/api/v1/records/chaos/deal/{external_id}", json={"data": {"n": 1}}
                )
            except httpx.TransportError:
                continue  # no answer is not an acknowledgement; the server must still answer the rest
            statuses.append(response.status_code)
            if response.status_code in (200, 201):
                acknowledged.append(external_id)
                if killed_at and not back_at:
                    back_at = asyncio.get_running_loop().time()

    try:
        async with (
            live_server(
                settings.model_copy(update={"database_url": url}), "granian", tmp_path, grace_s=1
            ) as live,
            httpx.AsyncClient(
                base_url=live.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
            ) as http,
        ):
            writers = [asyncio.create_task(writer(http, number)) for number in range(8)]
            await asyncio.sleep(1.0)
            assert acknowledged, "no write succeeded before the kill"
            assert postgres.process is not None
            postgres.process.kill()  # kill -9 of the postmaster; the supervisor restarts it
            killed_at = asyncio.get_running_loop().time()
            async with asyncio.timeout(30):
                while not back_at or len(acknowledged) < 50:
                    await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*writers)
            assert "status=500" not in live.logs()
    finally:
        stop.set()
        await postgres.stop()
    assert set(statuses) <= {200, 201, 503}, f"unexpected statuses: {sorted(set(statuses))}"
    assert 503 in statuses  # the kill was seen, and answered as the outage it is
    assert back_at - killed_at < 30
    await postgres.start()
    try:
        connection = await asyncpg.connect(url)
        stored = {
            row["external_id"]
            for row in await connection.fetch(
                "SELECT external_id FROM sophia_core.unified_data_catalog WHERE source_system = 'chaos'"
            )
        }
        await connection.close()
    finally:
        await postgres.stop()
    assert set(acknowledged) <= stored
