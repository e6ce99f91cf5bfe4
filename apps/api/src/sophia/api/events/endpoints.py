"""HTTP for events: `POST /api/v1/events` takes a batch and answers 202 once JetStream has it all."""

from __future__ import annotations

import orjson
import structlog
from fastapi import APIRouter, Request, Response

from sophia.api.dependencies import Writer
from sophia.api.events import service
from sophia.api.events.schemas import Accepted
from sophia.api.problems import unsupported_media_type
from sophia.api.records.endpoints import NDJSON_TYPES
from sophia.core.errors import Unavailable

router = APIRouter(prefix="/api/v1", tags=["events"])

EXAMPLE = [
    {
        "type": "user.event",
        "key": "u-1842",
        "payload": {"name": "deal.viewed", "user_id": "u-1842", "properties": {"deal": "D-1001"}},
    },
    {"type": "system.event", "key": "hubspot-sync", "payload": {"name": "sync.finished", "severity": "info"}},
]


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses={503: {"description": "A stream is nearly full or NATS is down: retry after Retry-After"}},
    summary="Accept a batch of user and system events (JSON array or NDJSON): all or none",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": {}}, "example": EXAMPLE},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def post_events(request: Request, caller: Writer) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    max_events = caller.state.settings.events_max_batch
    if media_type == "application/json":
        events = service.parse_json_array(await request.body(), max_events)
    elif media_type in NDJSON_TYPES:
        events = service.parse_ndjson(await request.body(), max_events)
    else:
        raise unsupported_media_type(
            "Send a JSON array (application/json) or NDJSON (application/x-ndjson) of events.", media_type
        )
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    batch = service.envelopes(events, request_id)
    try:
        await service.ingest(caller.state.events, batch)
    except Unavailable as error:
        # Some of the batch may be stored already: the ids let a resend add nothing twice.
        error.context["ids"] = [envelope.id for envelope in batch]
        raise
    body = {"accepted": len(batch), "ids": [envelope.id for envelope in batch]}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")
