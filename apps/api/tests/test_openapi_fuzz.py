"""Every operation in the OpenAPI schema, fuzzed by schemathesis: whatever arrives, never a 5xx.

The app under fuzz is a fresh one on a database of its own: schemathesis runs it (and its lifespan) on
its own event loop, and what it writes — schema examples such as hubspot deals included — must not leak
into the databases other tests read. What the fuzzer found is pinned below as plain examples (NUL in
text has its own in test_errors.py and test_bulk.py).
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

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

# Only the OpenAPI document is read here, at collection: an app that is never started needs no engines.
_UNSTARTED = Settings(
    database_url="postgresql://unused",
    redis_url="redis://unused",
    nats_url="nats://unused",
    log_json=False,
    log_level="WARNING",
)
_OPENAPI = create_app(_UNSTARTED).openapi()
schema = schemathesis.openapi.from_dict(_OPENAPI, config=fuzz_config(10, coverage=True))
"""The fast tier's run: the whole schema, its boundary cases included, in about two seconds."""
deep_schema = schemathesis.openapi.from_dict(_OPENAPI, config=fuzz_config(100, coverage=False))
"""The load tier's run: ten times the fuzzed cases. Not the boundary cases again: they are the same
in every run, the fast tier's, and building them costs every xdist worker 1.3 s at collection."""


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
    return create_app(settings.model_copy(update={"database_url": fuzzed_database[0]}))


@pytest.fixture(scope="module")
def admin_headers(fuzzed_database) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzzed_database[1]}"}


@schema.parametrize()
def test_no_operation_answers_with_a_server_error(case, fuzzed_app, admin_headers):
    case.call_and_validate(app=fuzzed_app, headers=admin_headers, checks=[not_a_server_error])


@pytest.mark.load
@deep_schema.parametrize()
def test_no_operation_answers_with_a_server_error_fuzzed_deeper(case, fuzzed_app, admin_headers):
    case.call_and_validate(app=fuzzed_app, headers=admin_headers, checks=[not_a_server_error])


OUT_OF_RANGE_DATES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
"""Valid ISO 8601, but their UTC instants fall before year 1 or after year 9999."""
HUGE_INTEGER = 123456789012345678901234567890


@pytest.fixture
def source_system() -> str:
    return "pg" + uuid.uuid4().hex[:10]


def ndjson_line(source_system: str, external_id: str, fields: str) -> bytes:
    return (
        f'{{"source_system":"{source_system}","kind":"deal","external_id":"{external_id}",{fields}}}\n'
    ).encode()


async def bulk(client, body: bytes):
    return await client.post(
        "/api/v1/records:bulk", content=body, headers={"Content-Type": "application/x-ndjson"}
    )


@pytest.mark.parametrize("created_at", OUT_OF_RANGE_DATES)
async def test_put_rejects_a_created_at_out_of_range_as_invalid(client, source_system, created_at):
    response = await client.put(
        f"/api/v1/records/{source_system}/deal/d-1", json={"data": {}, "created_at": created_at}
    )
    assert response.status_code == 422


@pytest.mark.parametrize("updated_since", OUT_OF_RANGE_DATES)
async def test_list_rejects_an_updated_since_out_of_range_as_invalid(client, source_system, updated_since):
    response = await client.get(
        "/api/v1/records", params={"source_system": source_system, "updated_since": updated_since}
    )
    assert response.status_code == 422


@pytest.mark.parametrize("created_at", OUT_OF_RANGE_DATES)
async def test_bulk_rejects_a_created_at_out_of_range_as_invalid_and_writes_nothing(
    client, source_system, created_at
):
    body = ndjson_line(source_system, "d-0", '"data":{}') + ndjson_line(
        source_system, "d-1", f'"data":{{}},"created_at":"{created_at}"'
    )
    response = await bulk(client, body)
    assert response.status_code == 422
    stored = await client.get("/api/v1/records", params={"source_system": source_system})
    assert stored.json()["items"] == []


async def test_put_rejects_a_number_beyond_double_range_rather_than_storing_null(client, source_system):
    response = await client.put(
        f"/api/v1/records/{source_system}/deal/d-1",
        content='{"data":{"amount":1e400}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422


async def test_put_and_bulk_agree_on_an_integer_beyond_64_bits(client, source_system):
    put = await client.put(
        f"/api/v1/records/{source_system}/deal/d-1",
        content=f'{{"data":{{"amount":{HUGE_INTEGER}}}}}',
        headers={"Content-Type": "application/json"},
    )
    bulked = await bulk(client, ndjson_line(source_system, "d-2", f'"data":{{"amount":{HUGE_INTEGER}}}'))
    assert (put.status_code, bulked.status_code) in [(201, 200), (422, 422)]
