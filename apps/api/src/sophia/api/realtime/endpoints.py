"""HTTP for the real-time service: a short-lived token for a browser's WebSocket."""

from __future__ import annotations

from fastapi import APIRouter

from sophia.api.dependencies import Reader
from sophia.api.realtime import service
from sophia.api.realtime.schemas import RealtimeToken
from sophia.database import tokens

router = APIRouter(prefix="/api/v1", tags=["realtime"])


@router.post(
    "/realtime/token",
    response_model=RealtimeToken,
    summary="A token for the real-time WebSocket, valid for a minute",
    description=(
        "For clients that cannot set headers on a WebSocket (browsers): connect to the real-time "
        "service's `/ws?token=<token>` within `expires_in` seconds. The token carries this key's "
        "scope; a key revoked afterwards still connects until the token expires."
    ),
)
async def realtime_token(caller: Reader) -> RealtimeToken:
    token = await service.issue_token(caller.state, caller.key)
    return RealtimeToken(token=token, expires_in=tokens.TOKEN_TTL_S, scope=caller.key.scope)
