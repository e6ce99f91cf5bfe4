"""Every operation in the OpenAPI schema, fuzzed by schemathesis: whatever arrives, never a 5xx.

The fast tier's run: five fuzzed cases per operation (generating them is most of its cost, 1.5 s at
ten). The boundary cases (schemathesis's coverage phase) and twenty times the fuzzed cases run in the
load tier (test_openapi_fuzz_load.py): building the boundary cases at collection cost every xdist
worker about a second in every tier. What the fuzzer
found is pinned below as plain examples (NUL in text has its own in test_errors.py and test_bulk.py).
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from fuzzing import OPENAPI, admin_headers, fuzz_config, fuzzed_app, fuzzed_database
from schemathesis.checks import not_a_server_error

__all__ = ["admin_headers", "fuzzed_app", "fuzzed_database"]  # fixtures the tests below use

schema = schemathesis.openapi.from_dict(OPENAPI, config=fuzz_config(5, coverage=False))


@schema.parametrize()
def test_no_operation_answers_with_a_server_error(case, fuzzed_app, admin_headers):
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
