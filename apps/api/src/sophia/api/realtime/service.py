"""Issuing real-time tokens: signed with the secret every process reads from the database."""

from __future__ import annotations

from sophia.api.state import AppState
from sophia.database import tokens
from sophia.database.keys import ApiKey


async def issue_token(state: AppState, key: ApiKey) -> str:
    if state.token_secret is None:  # read once per process (the API may start before PostgreSQL)
        async with state.database.connection() as connection:
            state.token_secret = await tokens.signing_secret(connection)
    return tokens.issue(state.token_secret, key, tokens.TOKEN_TTL_S)
