"""HTTP for the real-time service: a short-lived token for a browser's WebSocket."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from sophia.api.auth import require
from sophia.api.realtime import service
from sophia.api.realtime.schemas import RealtimeToken
from sophia.api.state import AppState, app_state
from sophia.database import tokens
from sophia.database.keys import ApiKey

router = APIRouter(prefix="/api/v1", tags=["realtime"])
State = Annotated[AppState, Depends(app_state)]


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
async def realtime_token(state: State, key: Annotated[ApiKey, Depends(require("read"))]) -> RealtimeToken:
    token = await service.issue_token(state, key)
    return RealtimeToken(token=token, expires_in=tokens.TOKEN_TTL_S, scope=key.scope)
