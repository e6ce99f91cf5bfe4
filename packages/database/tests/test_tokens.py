"""Real-time tokens: signed by a secret the processes share through the database, short-lived."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from sophia.core.errors import Unauthorized
from sophia.database import tokens
from sophia.database.keys import ApiKey

KEY = ApiKey(uuid.uuid4(), "browser", "0123abcd", "read", datetime.now(UTC), None)


async def test_every_process_gets_the_same_secret_made_once(database):
    async with database.connection() as connection:
        first = await tokens.signing_secret(connection, "test-secret")
        again = await tokens.signing_secret(connection, "test-secret")
    assert first == again
    assert len(first) == 32


def test_a_token_verifies_until_it_expires_and_carries_the_keys_scope():
    secret = b"s" * 32
    token = tokens.issue(secret, KEY, ttl_s=60, now=1000.0)
    claims = tokens.verify(secret, token, now=1059.0)
    assert (claims.key_id, claims.prefix, claims.scope) == (str(KEY.id), "0123abcd", "read")
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(secret, token, now=1060.5)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),  # another signature
        lambda token: token.replace("rt1.", "rt2.", 1),
        lambda token: "rt1." + "e30" + "." + token.rsplit(".", 1)[1],  # other claims, same signature
        lambda token: token + ".",
        lambda token: "",
        lambda token: "rt1.!!!.!!!",
        lambda token: "x" * 600,
    ],
)
def test_a_token_altered_in_any_way_or_signed_by_another_secret_is_refused(tamper):
    token = tokens.issue(b"s" * 32, KEY, now=1000.0)
    with pytest.raises(Unauthorized):
        tokens.verify(b"s" * 32, tamper(token), now=1001.0)
    with pytest.raises(Unauthorized):
        tokens.verify(b"t" * 32, token, now=1001.0)
