"""The FastAPI application: routers, error mapping, middleware and the lifespan that owns connections."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from sophia.api import docs, problems
from sophia.api.analytics.endpoints import router as analytics_router
from sophia.api.auth import KeyGate, KeyVerifier
from sophia.api.deals.endpoints import router as deals_router
from sophia.api.dependencies import document_bearer_auth
from sophia.api.events.endpoints import router as events_router
from sophia.api.health.endpoints import router as health_router
from sophia.api.health.service import Readiness
from sophia.api.hot import HotReads, answer_hit
from sophia.api.hot_writes import answer_put
from sophia.api.jobs.endpoints import router as jobs_router
from sophia.api.middleware import RequestContext
from sophia.api.ml.admission import ModelAdmission
from sophia.api.ml.endpoints import router as ml_router
from sophia.api.realtime.endpoints import router as realtime_router
from sophia.api.records.endpoints import router as records_router
from sophia.api.records.spool import Spools
from sophia.api.search.endpoints import dashboard_search
from sophia.api.search.endpoints import router as search_router
from sophia.api.state import AppState
from sophia.cache import CacheConfig, TieredCache
from sophia.cache.connection import RedisConnection
from sophia.database import Database
from sophia.events.connection import NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.events.streams import stream_specs
from sophia.ml.models import Models
from sophia.shared.logging import configure_logging, get_logger
from sophia.shared.metrics import forget_dead_workers
from sophia.shared.process import die_with_parent, settle_heap
from sophia.shared.settings import Settings
from sophia.web import pages

log = get_logger(__name__)

DESCRIPTION = """
Sophia's unified data catalog over REST. Every route under `/api/v1` needs an API key sent as
`Authorization: Bearer <key>` (create one with `sophia keys create --scope read|write|admin`).
Errors are RFC 9457 `application/problem+json`.
"""


POOL_OBSERVE_INTERVAL_S = 5.0
SERVER_PID_VARIABLE = "SOPHIA_SERVER_PID"
"""Set by `sophia.api.server` for its workers: the parent they must not outlive."""


async def _observe_pool(database: Database) -> None:
    """Keep the pool gauges current in every worker, not only in the one that answers /metrics."""
    while True:
        database.observe()
        await asyncio.sleep(POOL_OBSERVE_INTERVAL_S)


class SophiaApi(FastAPI):
    """FastAPI with a front door: a cached record for a key verified recently is answered before
    any of FastAPI's or Sophia's middleware runs (`sophia.api.hot.answer_hit`), and so is a plainly
    valid record PUT by such a key (`sophia.api.hot_writes.answer_put`); everything else goes the
    whole way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, state = scope["method"], getattr(self.state, "sophia", None)
            if method == "GET" and await answer_hit(state, scope, receive, send):
                return
            if method == "PUT":
                answered = await answer_put(state, scope, receive, send)
                if answered is None:
                    return
                receive = answered
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json, settings.log_client_lines_per_s)
    if not (settings.database_url and settings.redis_url and settings.nats_url):
        raise RuntimeError(
            "SOPHIA_DATABASE_URL, SOPHIA_REDIS_URL and SOPHIA_NATS_URL must be set (`sophia up` sets them)"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            forget_dead_workers()
            stack.callback(forget_dead_workers, own_exit=True)
            database = Database(settings)
            await database.open(require_database=False)
            stack.push_async_callback(database.close, settings.shutdown_grace_s)
            redis = await stack.enter_async_context(RedisConnection.from_settings(settings))
            nats = await stack.enter_async_context(
                NatsConnection(settings.nats_url or "", settings.engine_timeout_s)
            )
            observer = asyncio.create_task(_observe_pool(database), name="observe-pool")
            stack.callback(observer.cancel)
            keys = KeyVerifier.from_settings(
                database, settings, stale_if_error_s=settings.cache_stale_if_error_s
            )
            config = CacheConfig.from_settings(settings)
            redis_tier = redis.client if settings.cache_enabled else None
            cache = await stack.enter_async_context(TieredCache(redis_tier, config, name="api"))
            cache_control = f"private, max-age={int(config.ttl_class('api').fresh_s)}"
            events = EventPublisher(nats, stream_specs(settings), refuse_at=settings.events_backpressure_fill)
            models = None
            if settings.ml_enabled:
                models = await stack.enter_async_context(Models.load(settings, cache))
            readiness = Readiness(settings.readiness_reuse_s)
            spools = Spools(
                max_uploads=settings.bulk_max_uploads, memory_bytes=settings.bulk_spool_memory_bytes
            )
            app.state.sophia = AppState(
                settings,
                database,
                redis,
                nats,
                keys,
                cache,
                cache_control,
                events,
                readiness,
                spools,
                models,
            )
            settle_heap()
            log.info("api_started")
            yield
            log.info("api_draining")

    app = SophiaApi(
        title="Sophia API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: ours (sophia.api.docs) from the API itself
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    app.include_router(health_router)
    app.include_router(records_router)
    app.include_router(deals_router)
    app.include_router(analytics_router)
    app.include_router(events_router)
    app.include_router(jobs_router)
    app.include_router(search_router)
    app.include_router(realtime_router)
    if settings.ml_enabled:
        app.include_router(ml_router)
    document_bearer_auth(app)
    docs.install(app)  # after the API's routes, which routing tries first
    pages.install(app, dashboard_search)  # the dashboard, at /
    app.add_middleware(HotReads)  # innermost: behind the request id, metrics, limits and the key
    if settings.ml_enabled:  # a busy model refuses before the body is read
        room = min(settings.ml_max_inputs, settings.ml_max_queue)
        app.add_middleware(ModelAdmission, room=room, timeout_s=settings.ml_timeout_s)
    app.add_middleware(KeyGate)  # before any body is read
    app.add_middleware(RequestContext, settings=settings)
    return app


def factory() -> FastAPI:
    """Entry point for ASGI servers (`--factory`), run in each worker: settings from the environment.

    A worker dies with the server process that spawned it, so `kill -9` of `sophia up` (or of
    the server) leaves no worker holding the port. SIGKILL, not SIGTERM: with its supervisor and
    engines gone too, a draining worker can wait on them for good (seen in the kill -9 test)."""
    server_pid = int(os.environ.get(SERVER_PID_VARIABLE, os.getpid()))
    if server_pid != os.getpid():  # a worker process (one-process servers run the app themselves)
        die_with_parent(signal.SIGKILL)
        if os.getppid() != server_pid:
            os._exit(0)  # the server died while this worker was starting: the signal will never come
    return create_app()
