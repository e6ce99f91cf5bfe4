"""The OpenAPI fuzz runs' shared parts: schemathesis's settings, the document, and an app of the
run's own on a database of its own.

The app under fuzz is a fresh one: schemathesis runs it (and its lifespan) on its own event loop, and
what it writes (schema examples such as hubspot deals included) must not leak into the databases other
tests read.
"""

from __future__ import annotations

import asyncpg
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from sophia.api.app import create_app
from sophia.database import keys
from sophia.shared.settings import Settings


def fuzz_config(examples: int, *, coverage: bool) -> SchemathesisConfig:
    """Examples, boundary coverage (if `coverage`) and `examples` fuzzed cases per operation. The seed
    makes a failure come back on the next run; no shrinking, so a failure reports as soon as found."""
    return SchemathesisConfig.from_str(
        f"""
seed = 20260301

[generation]
max-examples = {examples}
database = "none"
no-shrink = true

[phases.coverage]
enabled = {"true" if coverage else "false"}
"""
    )


# The bulk body is NDJSON text: send the generated string as it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

# Only the OpenAPI document is read, at collection: an app that is never started needs no engines.
_UNSTARTED = Settings(
    database_url="postgresql://unused",
    redis_url="redis://unused",
    nats_url="nats://unused",
    log_json=False,
    log_level="WARNING",
)
OPENAPI = create_app(_UNSTARTED).openapi()


@pytest.fixture(scope="module")
async def fuzzed_database(migrated_database) -> tuple[str, str]:
    """A migrated database of the fuzz run's own and an admin key on it: (DSN, secret)."""
    url = await migrated_database()
    connection = await asyncpg.connect(url)
    try:
        _, secret = await keys.create(connection, "fuzz-admin", "admin")
    finally:
        await connection.close()
    return url, secret


@pytest.fixture(scope="module")
def fuzzed_app(settings, fuzzed_database):
    """The app under fuzz, started once for the module. schemathesis starts an app's lifespan at its
    first call and ends it after each test, so each operation started it again (its pools opened,
    PostgreSQL's backends forked): one start for the module instead of one per operation."""
    app = create_app(settings.model_copy(update={"database_url": fuzzed_database[0]}))
    shutdown, asgi.shutdown_lifespans = asgi.shutdown_lifespans, lambda: None
    try:
        yield app
    finally:
        asgi.shutdown_lifespans = shutdown
        shutdown()


@pytest.fixture(scope="module")
def admin_headers(fuzzed_database) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzzed_database[1]}"}
