"""Contract of the operational routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
from waiting import eventually


async def test_healthz_is_200_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_with_postgres_redis_and_nats_ok(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"postgres": "ok", "redis": "ok", "nats": "ok"}
    assert "retry-after" not in response.headers


async def test_readyz_reports_the_outbox_backlog(settings, database, api_keys):
    from app_clients import app_client

    async with database.connection() as connection:
        waiting = await connection.fetchval("SELECT count(*) FROM sophia_core.outbox")
    # An app of its own that reuses no verdict: the shared one's may be up to a second old.
    async with app_client(settings.model_copy(update={"readiness_reuse_s": 0}), api_keys["write"]) as client:
        written = await client.put(f"/api/v1/records/ready{uuid.uuid4().hex[:8]}/deal/1", json={"data": {}})
        assert written.status_code == 201

        async def counted() -> bool:  # a probe that ran out of time says None: ask again
            body = (await client.get("/readyz")).json()
            return body["outbox_depth"] is not None and body["outbox_depth"] >= waiting + 1

        # Nothing relays in the fast tier's session but the relay's own tests, on their own databases.
        await eventually(counted)
        assert (await client.get("/readyz")).json()["outbox_depth_exact"]


async def test_a_flood_of_readiness_probes_reaches_the_engines_once_per_reuse_period(settings):
    from sophia.api.app import create_app
    from sophia.database import Database

    app = create_app(settings.model_copy(update={"readiness_reuse_s": 60}))
    pings = 0
    original = Database.ping

    async def counted_ping(self) -> None:
        nonlocal pings
        pings += 1
        await original(self)

    async with app.router.lifespan_context(app):
        app.state.sophia.database.ping = counted_ping.__get__(app.state.sophia.database)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
            answers = await asyncio.gather(*(http.get("/readyz") for _ in range(200)))
            again = await http.get("/readyz")
    assert [answer.status_code for answer in answers] == [200] * 200
    assert pings == 1  # 200 at once share one probe; the next within the period reuses its verdict
    assert again.json() == answers[0].json()


async def test_metrics_count_requests_by_route_template_not_raw_path(client):
    record_id = uuid.uuid4()
    await client.get(f"/api/v1/records/{record_id}")
    text = (await client.get("/metrics")).text
    pattern = (
        r"sophia_http_request_duration_seconds_count"
        r'\{method="GET",route="/api/v1/records/\{record_id\}",status="404"\} (\S+)'
    )
    counted = re.search(pattern, text)
    assert counted is not None, text
    assert float(counted.group(1)) >= 1
    assert str(record_id) not in text


async def test_metrics_count_unmatched_paths_under_one_label(client):
    await client.get(f"/no-such-route-{uuid.uuid4().hex}")
    text = (await client.get("/metrics")).text
    assert 'route="unmatched",status="404"' in text
    assert "no-such-route" not in text


async def test_metrics_report_db_pool_connections(client):
    text = (await client.get("/metrics")).text
    gauge = re.search(r"^sophia_db_pool_connections (\S+)$", text, re.MULTILINE)
    assert gauge is not None, text
    assert float(gauge.group(1)) >= 1


async def test_metrics_are_prometheus_text(client):
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE sophia_http_request_duration_seconds histogram" in response.text


async def test_readyz_names_a_probe_that_outlasts_its_own_timeout_and_leaves_the_backlog_unknown(
    settings, monkeypatch
):
    """Every pooled connection busy: the PostgreSQL probe waits on the pool (up to its acquire
    timeout, longer than the probe's), so the readiness backstop answers for it."""
    from sophia.api.app import create_app
    from sophia.api.health import endpoints

    monkeypatch.setattr(endpoints, "PROBE_BACKSTOP_S", 0.1)  # still far short of the 30 s acquire timeout
    busy = settings.model_copy(
        update={
            "db_pool_min_size": 1,
            "db_pool_max_size": 1,
            "db_acquire_timeout_s": 30,
            "engine_timeout_s": 0.05,
        }
    )
    app = create_app(busy)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            app.state.sophia.database.connection(),  # the pool's only connection, held
            httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http,
        ):
            response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["checks"] == {"postgres": "no answer within 0.05s", "redis": "ok", "nats": "ok"}
    assert body["outbox_depth"] is None


async def test_without_anonymous_detail_a_caller_without_a_key_sees_the_status_alone(settings, api_keys):
    from app_clients import app_client

    private = settings.model_copy(update={"anonymous_detail": False, "readiness_reuse_s": 0})
    async with app_client(private) as anonymous:
        ready = await anonymous.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        refused = await anonymous.get("/metrics")
        assert refused.status_code == 401
        assert "SOPHIA_ANONYMOUS_DETAIL is off" in refused.json()["detail"]
        assert (await anonymous.get("/healthz")).status_code == 200
    async with app_client(private, api_keys["read"]) as keyed:
        assert (await keyed.get("/readyz")).json()["checks"]["postgres"] == "ok"
        assert "sophia_http_request_duration_seconds" in (await keyed.get("/metrics")).text
