"""The hot read path: a record fresh in L1, or loaded for the read, is answered before FastAPI,
exactly as FastAPI would answer it."""

import uuid

import httpx
import pytest
from app_clients import app_client
from metrics import sample

from sophia.api.app import create_app
from sophia.api.hot import answer_hit


def key_lookups() -> float:
    return sample("sophia_api_key_lookups_total")


def hot_reads() -> float:
    return sample("sophia_api_hot_reads_total")


async def cached_record(client) -> str:
    source = f"hot-{uuid.uuid4().hex[:12]}"
    response = await client.put(f"/api/v1/records/{source}/deal/r-1", json={"data": {"v": 1}})
    assert response.status_code == 201
    return f"/api/v1/records/{response.json()['id']}"


def direct_reads() -> float:
    return sample("sophia_api_direct_reads_total")


def long_way(url: str) -> str:
    """The same record by an id spelled in capitals: only the route, not the hot path, reads it."""
    return url.upper().replace("/API/V1/RECORDS/", "/api/v1/records/")


def comparable(response) -> tuple:
    headers = {name: value for name, value in response.headers.items() if name != "x-request-id"}
    return response.status_code, headers, response.content


async def test_a_hit_is_answered_before_routing_with_the_same_bytes_and_headers(client):
    url = await cached_record(client)
    routed = await client.get(long_way(url))  # through FastAPI, fills L1
    before = hot_reads()
    hot = await client.get(url)
    assert hot_reads() == before + 1
    assert comparable(hot) == comparable(routed)
    assert hot.headers["x-request-id"] != routed.headers["x-request-id"]


async def test_a_miss_is_loaded_and_answered_before_routing_with_the_same_bytes_and_headers(
    settings, api_keys
):
    uncached = settings.model_copy(update={"cache_enabled": False})
    async with app_client(uncached, api_keys["write"]) as client:
        url = await cached_record(client)
        routed = await client.get(long_way(url))
        etag = routed.headers["etag"]
        before, hits = direct_reads(), hot_reads()
        direct = await client.get(url)
        not_modified = await client.get(url, headers={"If-None-Match": etag})
        routed_not_modified = await client.get(long_way(url), headers={"If-None-Match": etag})
    assert (direct_reads(), hot_reads()) == (before + 2, hits)
    assert comparable(direct) == comparable(routed)
    assert comparable(not_modified) == comparable(routed_not_modified)
    assert not_modified.status_code == 304


async def test_a_record_that_is_not_there_is_the_routes_404_problem(client):
    before = direct_reads()
    response = await client.get(f"/api/v1/records/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert direct_reads() == before


async def test_a_hit_honours_if_none_match(client):
    url = await cached_record(client)
    etag = (await client.get(url)).headers["etag"]
    before = hot_reads()
    not_modified = await client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert hot_reads() == before + 1


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(lambda client, url: client.get(long_way(url)), id="uppercase-id"),
        pytest.param(
            lambda client, url: client.get(url, headers={"Authorization": "Bearer sk_nope"}), id="unknown-key"
        ),
        pytest.param(lambda client, url: client.get(url, headers={"Authorization": ""}), id="no-key"),
        pytest.param(lambda client, url: client.head(url), id="head"),
    ],
)
async def test_anything_but_a_remembered_key_reading_a_canonical_id_goes_the_long_way(client, make_request):
    url = await cached_record(client)
    await client.get(url)
    before = hot_reads()
    direct = direct_reads()
    response = await make_request(client, url)
    assert (hot_reads(), direct_reads()) == (before, direct)
    assert response.status_code in (200, 401, 405)


async def test_a_key_not_verified_within_its_memory_ttl_is_checked_again_before_a_hot_read(
    settings, api_keys
):
    async with app_client(settings.model_copy(update={"api_key_cache_ttl_s": 0}), api_keys["read"]) as client:
        async with app_client(settings, api_keys["write"]) as writer:
            url = await cached_record(writer)
        await client.get(url)
        reads, lookups = hot_reads(), key_lookups()
        assert (await client.get(url)).status_code == 200
        assert (await client.get(url)).status_code == 200
        assert hot_reads() == reads + 2
        assert key_lookups() == lookups + 2  # nothing is remembered: each read verified the key first


def latency_count(status: str) -> float:
    return sample(
        "sophia_http_request_duration_seconds_count",
        method="GET",
        route="/api/v1/records/{record_id}",
        status=status,
    )


async def test_a_hit_answered_at_the_front_door_keeps_the_request_id_and_the_latency_metric(client):
    url = await cached_record(client)
    await client.get(url)  # the key is remembered, the record in L1
    reads, counted, not_modified = hot_reads(), latency_count("200"), latency_count("304")
    hit = await client.get(url, headers={"X-Request-ID": "trace-42"})
    etag = hit.headers["etag"]
    again = await client.get(url, headers={"If-None-Match": etag})
    assert hit.status_code == 200
    assert hit.headers["x-request-id"] == "trace-42"
    assert again.status_code == 304
    assert len(again.headers["x-request-id"]) == 32  # one of ours
    assert hot_reads() == reads + 2
    assert (latency_count("200"), latency_count("304")) == (counted + 1, not_modified + 1)
    refused = await client.get(url, headers={"X-Request-ID": "bad id with spaces"})
    assert refused.status_code == 400  # the whole path's answer, not a hit
    assert hot_reads() == reads + 2


async def test_the_front_door_answers_a_hit_itself_and_leaves_anything_else_alone(settings, api_keys):
    app = create_app(settings)
    secret = api_keys["read"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {api_keys['write']}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
            url = await cached_record(client)
            routed = await client.get(long_way(url), headers={"Authorization": f"Bearer {secret}"})
        state = app.state.sophia

        async def front(authorization: str) -> list[dict]:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "path": url,
                "headers": [(b"authorization", authorization.encode())],
            }
            assert await answer_hit(state, scope, None, send) == bool(sent)
            return sent

        start, body = await front(f"Bearer {secret}")
        assert start["status"] == 200
        assert body["body"] == routed.content
        assert dict((k.decode(), v.decode()) for k, v in start["headers"])["etag"] == routed.headers["etag"]
        assert await front("Bearer sk_never_verified") == []  # KeyGate's to check, the long way
        assert await answer_hit(None, {"type": "http", "path": url, "headers": []}, None, None) is False


async def test_a_record_not_there_is_answered_at_the_front_door_as_the_route_answers_it(
    settings, api_keys, client
):
    url = f"/api/v1/records/{uuid.uuid4()}"
    await client.get(url)  # the key is remembered from here on
    reads = direct_reads()
    front = await client.get(url, headers={"X-Request-ID": "trace-404"})
    unremembered = settings.model_copy(update={"api_key_cache_ttl_s": 0})
    async with app_client(unremembered, api_keys["read"]) as routed_client:
        routed = await routed_client.get(url)  # a key checked again: the whole way, the route's 404
    assert front.status_code == routed.status_code == 404
    assert comparable(front) == comparable(routed)
    assert front.headers["x-request-id"] == "trace-404"
    assert direct_reads() == reads
    assert latency_count("404") >= 2
