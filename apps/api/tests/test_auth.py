"""Contract of API-key authentication: Bearer keys, scopes per route, revocation within the cache TTL."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from app_clients import app_client
from problem_assertions import assert_problem
from waiting import eventually

from sophia.api.auth import KeyVerifier
from sophia.core.errors import TooManyRequests, Unauthorized, Unavailable
from sophia.database import Database, keys

REFRESH = "/api/v1/admin/views/active-deals:refresh"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def record_path() -> str:
    return f"/api/v1/records/auth-{uuid.uuid4().hex[:12]}/deal/r-1"


@pytest.fixture(scope="module")
async def anonymous(app):
    """A client on the shared app that sends no credentials unless a test passes them."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        yield http


async def test_a_request_without_authorization_is_401_with_www_authenticate(anonymous):
    response = await anonymous.get("/api/v1/records")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("authorization", ["Basic xyz", "Bearer", "Bearer ", "sk_abc", "bearer"])
async def test_an_authorization_header_that_is_not_a_bearer_key_is_401(anonymous, authorization):
    response = await anonymous.get("/api/v1/records", headers={"Authorization": authorization})
    assert_problem(response, 401)
    assert "www-authenticate" in response.headers


async def test_an_unknown_bearer_key_is_401(anonymous):
    response = await anonymous.get("/api/v1/records", headers=bearer("sk_00000000_not-a-real-key"))
    assert_problem(response, 401)


async def test_authentication_runs_before_input_validation(anonymous):
    response = await anonymous.put("/api/v1/records/BAD/deal/x", json={"nonsense": True})
    assert_problem(response, 401)


async def test_a_read_key_may_read(anonymous, api_keys):
    response = await anonymous.get("/api/v1/records", params={"limit": 1}, headers=bearer(api_keys["read"]))
    assert response.status_code == 200


async def test_a_read_key_may_not_put_403(anonymous, api_keys):
    response = await anonymous.put(record_path(), json={"data": {}}, headers=bearer(api_keys["read"]))
    assert "'write'" in assert_problem(response, 403)["detail"]


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_read_key_may_not_delete_or_bulk_write_403(anonymous, api_keys, method):
    url = record_path() if method == "DELETE" else "/api/v1/records:bulk"
    response = await anonymous.request(method, url, headers=bearer(api_keys["read"]))
    assert_problem(response, 403)


async def test_a_write_key_may_put(anonymous, api_keys):
    response = await anonymous.put(record_path(), json={"data": {}}, headers=bearer(api_keys["write"]))
    assert response.status_code == 201


async def test_a_write_key_may_not_refresh_the_admin_view_403(anonymous, api_keys):
    response = await anonymous.post(REFRESH, headers=bearer(api_keys["write"]))
    assert "'admin'" in assert_problem(response, 403)["detail"]


async def test_the_admin_key_may_use_every_route(anonymous, api_keys):
    admin = bearer(api_keys["admin"])
    path = record_path()
    created = await anonymous.put(path, json={"data": {}}, headers=admin)
    ndjson = {**admin, "content-type": "application/x-ndjson"}
    statuses = [
        created.status_code,
        (await anonymous.get(created.headers["location"], headers=admin)).status_code,
        (await anonymous.get("/api/v1/records", params={"limit": 1}, headers=admin)).status_code,
        (await anonymous.post("/api/v1/records:bulk", content=b"", headers=ndjson)).status_code,
        (await anonymous.delete(path, headers=admin)).status_code,
        (await anonymous.post(REFRESH, headers=admin)).status_code,
        (await anonymous.get("/api/v1/deals/active", params={"limit": 1}, headers=admin)).status_code,
    ]
    assert statuses == [201, 200, 200, 200, 204, 204, 200]


@pytest.mark.parametrize("read", ["list", "hot record"])
async def test_a_revoked_key_is_refused_once_the_cache_ttl_has_passed(database, settings, api_keys, read):
    brief = settings.model_copy(update={"api_key_cache_ttl_s": 0.05})  # what the revoked key waits for
    async with database.connection() as connection:
        key, secret = await keys.create(connection, f"revoked-{uuid.uuid4().hex}", "read")
    async with app_client(brief) as anonymous:
        url = "/api/v1/records?limit=1"
        if read == "hot record":  # answered from L1 before routing, with the key checked from memory
            written = await anonymous.put(record_path(), json={"data": {}}, headers=bearer(api_keys["write"]))
            url = f"/api/v1/records/{written.json()['id']}"
            assert (await anonymous.get(url, headers=bearer(secret))).status_code == 200
        assert (await anonymous.get(url, headers=bearer(secret))).status_code == 200
        async with database.connection() as connection:
            assert await keys.revoke(connection, key.prefix)
        revoked_at = time.monotonic()
        answers: list[httpx.Response] = []

        async def refused() -> bool:
            answers.append(await anonymous.get(url, headers=bearer(secret)))
            return answers[-1].status_code != 200

        await eventually(refused, timeout_s=brief.api_key_cache_ttl_s + 5.0, poll_s=0.01)
    assert_problem(answers[-1], 401)
    assert time.monotonic() - revoked_at <= brief.api_key_cache_ttl_s + 2.0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_operational_routes_need_no_key(anonymous, path):
    assert (await anonymous.get(path)).status_code == 200


async def test_a_key_of_the_wrong_shape_is_refused_without_asking_the_database(settings):
    down = settings.model_copy(update={"database_url": "postgresql://sophia:x@127.0.0.1:9/none"})
    async with app_client(down) as http:
        wrong_shape = await http.get("/api/v1/records", headers={"Authorization": "Bearer not-a-key"})
        right_shape = await http.get(
            "/api/v1/records", headers={"Authorization": "Bearer sk_0123abcd_" + "A" * 43}
        )
    assert_problem(wrong_shape, 401)  # a 401, not the 503 a database lookup would give
    assert right_shape.status_code == 503


async def test_the_key_memory_forgets_the_least_recently_verified_key_past_its_size(database, api_keys):
    verifier = KeyVerifier(database, ttl_s=60, max_entries=2)
    for scope in ("read", "write", "admin"):
        assert (await verifier.verify(api_keys[scope])).scope == scope
    assert verifier.remembered(api_keys["read"]) is None  # checked against the database next time
    assert [verifier.remembered(api_keys[scope]).scope for scope in ("write", "admin")] == ["write", "admin"]


async def test_with_postgres_unreachable_a_key_verified_lately_still_opens_stale_reads(
    settings, database, api_keys
):
    verifier = KeyVerifier(database, ttl_s=0.0, stale_if_error_s=60)
    assert (await verifier.verify(api_keys["read"])).scope == "read"  # checked against the database
    verifier.database = Database(settings)  # never opened: every connection refused, as with PostgreSQL gone
    assert (await verifier.verify(api_keys["read"])).scope == "read"  # verified lately: trusted
    with pytest.raises(Unavailable):  # never verified here: nothing to go on
        await verifier.verify(api_keys["write"])
    verifier.stale_if_error_s = 0.0
    with pytest.raises(Unavailable):  # verified too long ago
        await verifier.verify(api_keys["read"])


async def test_a_blocked_address_with_postgres_unreachable_keeps_its_429_and_reads_the_prefixes_once(
    settings, database, api_keys
):
    """A blocked address asks PostgreSQL for the active keys' prefixes; when it cannot answer, the
    429 stands (no 500, no 503), and it is not asked again within `miss_ttl_s`."""
    verifier = KeyVerifier(database, ttl_s=60, failure_limit=1, miss_ttl_s=60)
    with pytest.raises(Unauthorized):
        await verifier.admit("sk_0123abcd_" + "A" * 43, "192.0.2.40")
    verifier.database = Database(settings)  # never opened: every connection refused
    for _ in range(3):
        with pytest.raises(TooManyRequests):
            await verifier.admit(api_keys["read"], "192.0.2.40")  # its prefix unknown: unread
    verifier.database = database
    with pytest.raises(TooManyRequests):  # read 60 s ago at the earliest: not asked again yet
        await verifier.admit(api_keys["read"], "192.0.2.40")
    assert (await verifier.admit(api_keys["read"], "192.0.2.41")).scope == "read"  # another address


async def test_the_schema_documents_bearer_auth_on_every_gated_operation_and_no_other(anonymous):
    """Routes take their key through one dependency that documents nothing itself: the schema says
    Bearer for every operation under `GATED_PREFIXES`, and for none of the open ones."""
    schema = (await anonymous.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    gated: list[object] = []
    ungated: list[object] = []
    for path, item in schema["paths"].items():
        securities = [operation.get("security") for operation in item.values()]
        (gated if path.startswith(("/api/v1/", "/v1/")) else ungated).extend(securities)
    assert gated
    assert all(security == [{"HTTPBearer": []}] for security in gated)
    assert ungated
    assert all(security is None for security in ungated)
