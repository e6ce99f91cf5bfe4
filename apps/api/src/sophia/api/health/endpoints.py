"""`/healthz` (the process is alive), `/readyz` (its dependencies answer), `/metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
from fastapi import APIRouter, Request, Response

from sophia.api.auth import bearer_secret
from sophia.api.dependencies import State
from sophia.api.health.service import Verdict
from sophia.api.state import AppState
from sophia.core.errors import Unauthorized, Unavailable
from sophia.database import outbox
from sophia.shared.metrics import render_latest

router = APIRouter(tags=["health"])
PROBE_BACKSTOP_S = 0.5


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def _check(probe: Awaitable[None], timeout_s: float) -> str:
    """A probe's verdict. Each probe has its own timeout; this outer one, a little longer, is a
    backstop that must not cut the probe's own clean-up short (a NATS client closed halfway)."""
    try:
        await asyncio.wait_for(probe, timeout_s + PROBE_BACKSTOP_S)
    except Unavailable as error:
        return error.detail
    except TimeoutError:
        return f"no answer within {timeout_s}s"
    return "ok"


async def _outbox_depth(state: AppState, timeout_s: float) -> outbox.Depth | None:
    """Catalog events not yet relayed to JetStream (informational: a backlog does not make the API
    unready, its writes still land); None when PostgreSQL cannot say."""
    try:
        async with asyncio.timeout(timeout_s), state.database.connection() as connection:
            return await outbox.depth(connection)
    except (Unavailable, TimeoutError):
        return None


async def _probe(state: AppState) -> Verdict:
    timeout_s = state.settings.engine_timeout_s
    postgres, redis, nats, backlog = await asyncio.gather(
        _check(state.database.ping(), timeout_s),
        _check(state.redis.ping(), timeout_s),
        _check(state.nats.ping(), timeout_s),
        _outbox_depth(state, timeout_s),
    )
    checks = {"postgres": postgres, "redis": redis, "nats": nats}
    if state.models is not None:  # each model answers once it is loaded
        checks |= {f"model:{name}": "ok" if up else "loading" for name, up in state.models.ready.items()}
    ready = all(result == "ok" for result in checks.values())
    report = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "breakers": {"postgres": state.database.breaker.state.name.lower()},
        "outbox_depth": backlog.events if backlog else None,
        "outbox_depth_exact": backlog.exact if backlog else None,
    }
    return Verdict(ready, report)


async def _shows_detail(request: Request, state: AppState) -> bool:
    """Whether this caller may see checks and metrics: anyone, or (`SOPHIA_ANONYMOUS_DETAIL` false)
    a caller with a read key."""
    if state.settings.anonymous_detail:
        return True
    try:  # as KeyGate checks a key: remembered misses, and a limit per address
        secret = bearer_secret(request.headers.get("authorization", ""))
        await state.keys.admit(secret, request.client.host if request.client else "")
    except Unauthorized:
        return False  # PostgreSQL away (503) or an address over its limit (429) are said as such
    return True


@router.get("/readyz", summary="Readiness: PostgreSQL, Redis and NATS answer, the models are loaded")
async def readyz(request: Request, state: State) -> Response:
    """Probed at most once per `SOPHIA_READINESS_REUSE_S`; callers meanwhile get the same verdict.
    Without `SOPHIA_ANONYMOUS_DETAIL`, a caller without a key sees the status alone."""
    verdict = await state.readiness.verdict(lambda: _probe(state))
    report = verdict.report if await _shows_detail(request, state) else {"status": verdict.report["status"]}
    return Response(
        orjson.dumps(report),
        status_code=200 if verdict.ready else 503,
        media_type="application/json",
        headers={} if verdict.ready else {"Retry-After": "2"},
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    if not await _shows_detail(request, state):
        raise Unauthorized(
            "Metrics need a key (SOPHIA_ANONYMOUS_DETAIL is off): `Authorization: Bearer <key>`."
        )
    state.database.observe()
    body, content_type = render_latest()
    return Response(body, media_type=content_type)
