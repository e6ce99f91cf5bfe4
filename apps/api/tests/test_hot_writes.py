"""The front door for writes: a plainly valid record PUT by a remembered write key is answered before
FastAPI, as the route answers it; anything else reaches the application with its body intact."""

import asyncio
import uuid

import httpx
import orjson
import pytest
from app_clients import app_client
from metrics import sample

from sophia.api.hot_writes import record_key_of
from sophia.core.records import RecordKey

LONG_WAY = "application/json; charset=utf-8"
"""A content type the route reads as JSON and the front door leaves to it."""
PUT_ROUTE = "/api/v1/records/{source_system}/{kind}/{external_id}"


def direct_writes() -> float:
    return sample("sophia_api_direct_writes_total")


def put_latency_count(status: int) -> float:
    return sample(
        "sophia_http_request_duration_seconds_count", method="PUT", route=PUT_ROUTE, status=str(status)
    )


def chunks(*parts: bytes):
    async def stream():
        for part in parts:
            yield part

    return stream()


@pytest.fixture
async def writer(settings, api_keys):
    """A client with a write key this process has verified (and so remembers)."""
    async with app_client(settings, api_keys["write"]) as client:
        assert (await client.get("/api/v1/records?limit=1")).status_code == 200
        yield client


def source() -> str:
    return f"front-{uuid.uuid4().hex[:12]}"


def comparable(response: httpx.Response) -> tuple:
    """Status, header names in order, their values but those naming one record (or sized by its
    timestamps), and the body with what differs between two records blanked."""
    assert response.headers["content-length"] == str(len(response.content))
    body = orjson.loads(response.content)
    for field in ("id", "source_system", "created_at", "updated_at"):
        body[field] = "-"
    differ = ("x-request-id", "location", "content-length")
    headers = [(name, value) for name, value in response.headers.items() if name not in differ]
    return response.status_code, [name for name, _ in response.headers.items()], headers, body


async def test_a_create_and_a_replace_are_answered_before_routing_as_the_route_answers_them(writer):
    data = {"data": {"dealname": "Acme", "amount": "12000", "nested": {"ü": [1, 2.5, None]}}}
    body = orjson.dumps(data)
    routed, front = source(), source()
    before, created = direct_writes(), put_latency_count(201)
    long_way = await writer.put(
        f"/api/v1/records/{routed}/deal/d-1", content=body, headers={"Content-Type": LONG_WAY}
    )
    assert direct_writes() == before
    answered = await writer.put(f"/api/v1/records/{front}/deal/d-1", json=data)
    assert direct_writes() == before + 1
    assert put_latency_count(201) == created + 2  # the front door's answer is measured like the route's
    assert comparable(answered) == comparable(long_way)
    assert answered.status_code == 201
    assert answered.headers["location"] == f"/api/v1/records/{answered.json()['id']}"
    assert answered.headers["x-request-id"] != long_way.headers["x-request-id"]
    stored = await writer.get(answered.headers["location"])
    assert stored.content == answered.content

    data["data"]["amount"] = "13000"
    long_way = await writer.put(
        f"/api/v1/records/{routed}/deal/d-1", json=data, headers={"Content-Type": LONG_WAY, "If-Match": '"1"'}
    )
    replaced = await writer.put(f"/api/v1/records/{front}/deal/d-1", json=data, headers={"If-Match": '"1"'})
    assert direct_writes() == before + 2
    assert comparable(replaced) == comparable(long_way)
    assert (replaced.status_code, replaced.headers["etag"]) == (200, '"2"')
    assert "location" not in replaced.headers
    assert (await writer.get(f"/api/v1/records/{replaced.json()['id']}")).json()["data"]["amount"] == "13000"


async def test_a_given_request_id_is_kept_and_a_body_sent_in_pieces_is_read_whole(writer):
    before = direct_writes()
    body = orjson.dumps({"data": {"v": 1}})
    response = await writer.put(
        f"/api/v1/records/{source()}/deal/d-1",
        content=chunks(body[:5], body[5:]),
        headers={
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "X-Request-ID": "trace-42",
        },
    )
    assert (response.status_code, response.headers["x-request-id"]) == (201, "trace-42")
    assert direct_writes() == before + 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"If-Match": '"7"'}, 412, id="stale-version"),
        pytest.param({"If-None-Match": "*"}, 412, id="create-only-but-there"),
    ],
)
async def test_a_write_the_service_refuses_is_the_applications_problem_from_the_front_door(
    writer, headers, status
):
    url = f"/api/v1/records/{source()}/deal/d-1"
    assert (await writer.put(url, json={"data": {"v": 1}})).status_code == 201
    before = direct_writes()
    front = await writer.put(url, json={"data": {"v": 2}}, headers=headers)
    routed = await writer.put(url, json={"data": {"v": 2}}, headers={**headers, "Content-Type": LONG_WAY})
    assert direct_writes() == before + 1
    assert front.status_code == routed.status_code == status
    assert front.headers["content-type"] == "application/problem+json"
    assert front.json() == routed.json()
    assert front.headers.get("retry-after") == routed.headers.get("retry-after")


@pytest.mark.parametrize(
    ("content", "headers", "status", "says"),
    [
        pytest.param(b'{"data": {"v": 1}', {}, 400, "JSON", id="malformed-json"),
        pytest.param(b'{"data": {"v": 1}, "extra": 1}', {}, 422, "extra", id="unknown-field"),
        pytest.param(b'{"data": {"v": "a\\u0000b"}}', {}, 422, "NUL", id="nul-in-text"),
        pytest.param(b'{"data": {"v": "\\ud800"}}', {}, 422, "surrogate", id="lone-surrogate"),
        pytest.param(b'{"data": {"v": NaN}}', {}, 422, "NaN", id="nan"),
        pytest.param(b"[1, 2]", {}, 422, "", id="not-an-object"),
        pytest.param(b'{"data": ' * 2000 + b"1" + b"}" * 2000, {}, 422, "nested", id="past-the-parser"),
        pytest.param(
            b'{"data": {"v": ' + b"[" * 200 + b"]" * 200 + b"}}", {}, 422, "nested", id="past-max-depth"
        ),
        pytest.param(b'{"data": {"v": 1}}', {"If-Match": "three"}, 400, "If-Match", id="bad-if-match"),
        pytest.param(
            b'{"data": {"v": 1}}',
            {"If-Match": '"1"', "If-None-Match": "*"},
            400,
            "not both",
            id="both-conditions",
        ),
        pytest.param(
            b'{"data": {"v": 1}}', {"If-None-Match": '"1"'}, 400, "only *", id="if-none-match-not-star"
        ),
        pytest.param(b'{"data": {"v": 1}}', {"Content-Type": "text/plain"}, 415, "text/plain", id="not-json"),
        pytest.param(b'{"data": {"v": 1}}', {"Content-Encoding": "gzip"}, 415, "gzip", id="encoded"),
        pytest.param(
            b'{"data": {"v": 1}}', {"X-Request-ID": "x" * 200}, 400, "X-Request-ID", id="bad-request-id"
        ),
    ],
)
async def test_anything_the_route_would_refuse_goes_the_long_way_with_its_body(
    writer, content, headers, status, says
):
    before = direct_writes()
    response = await writer.put(
        f"/api/v1/records/{source()}/deal/d-1",
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert says in response.text  # the application read the body the front door had read first
    assert direct_writes() == before


async def test_keys_that_may_not_write_or_are_not_remembered_go_the_long_way(settings, api_keys):
    async with app_client(settings, api_keys["read"]) as reader:
        assert (await reader.get("/api/v1/records?limit=1")).status_code == 200
        before = direct_writes()
        refused = await reader.put(f"/api/v1/records/{source()}/deal/d-1", json={"data": {}})
        unknown = await reader.put(
            f"/api/v1/records/{source()}/deal/d-1",
            json={"data": {}},
            headers={"Authorization": "Bearer sk_nope"},
        )
    async with app_client(
        settings.model_copy(update={"api_key_cache_ttl_s": 0}), api_keys["write"]
    ) as client:
        forgotten = await client.put(f"/api/v1/records/{source()}/deal/d-1", json={"data": {}})
    assert (refused.status_code, unknown.status_code, forgotten.status_code) == (403, 401, 201)
    assert direct_writes() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/records/Hubspot/deal/d-1",  # the route's 422: not an identifier
        "/api/v1/records/hubspot/deal",  # another route (or none)
        "/api/v1/records/hubspot/deal/" + "x" * 257,
        "/api/v1/records/hubspot/deal/a\x00b",
        "/api/v1/records:bulk",
    ],
)
def test_only_a_path_the_route_takes_as_it_is_names_a_record(path):
    assert record_key_of(path) is None


def test_a_canonical_path_names_its_record():
    assert record_key_of("/api/v1/records/hubspot/deal/Deal 7: ü") == RecordKey(
        "hubspot", "deal", "Deal 7: ü"
    )
    assert record_key_of("/api/v1/records/drive/doc/team/q3/plan.md") == RecordKey(
        "drive", "doc", "team/q3/plan.md"
    )  # the rest of the path, as the route takes it


def test_the_route_builds_the_path_of_an_id_holding_a_slash():
    from sophia.api.records.endpoints import router

    path = router.url_path_for("put_record", source_system="drive", kind="doc", external_id="q3/plan.md")
    assert path == "/api/v1/records/drive/doc/q3/plan.md"
    assert record_key_of(path) == RecordKey("drive", "doc", "q3/plan.md")


async def test_a_failure_that_is_no_sophia_error_is_the_applications_logged_500_from_the_front_door(
    writer, monkeypatch
):
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("sophia.api.records.service.put_record", broken)
    url = f"/api/v1/records/{source()}/deal/d-1"
    before, failed = direct_writes(), put_latency_count(500)
    front = await writer.put(url, json={"data": {"v": 1}}, headers={"X-Request-ID": "trace-500"})
    # the application re-raises after its 500 for the server to see: here, after the answer
    transport = httpx.ASGITransport(app=writer._transport.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=writer.base_url, headers=writer.headers
    ) as long:
        routed = await long.put(url, json={"data": {"v": 1}}, headers={"Content-Type": LONG_WAY})
    assert direct_writes() == before + 1
    assert put_latency_count(500) == failed + 2
    assert front.status_code == routed.status_code == 500
    assert front.headers["content-type"] == "application/problem+json"
    assert front.json() == routed.json()
    assert "a bug" not in front.text
    assert front.headers["x-request-id"] == "trace-500"


async def test_a_write_handed_on_after_its_body_was_read_is_timed_from_its_first_byte(writer):
    """The front door read the body (a field the route refuses) before the application saw it."""
    body = b'{"data": {"v": 1}, "extra": 1}'

    async def slowly():
        yield body[:10]
        await asyncio.sleep(0.3)
        yield body[10:]

    route = "/api/v1/records/{source_system}/{kind}/{external_id}"
    before = sample("sophia_http_request_duration_seconds_sum", method="PUT", route=route, status="422")
    response = await writer.put(
        f"/api/v1/records/{source()}/deal/d-1",
        content=slowly(),
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
    )
    assert response.status_code == 422
    after = sample("sophia_http_request_duration_seconds_sum", method="PUT", route=route, status="422")
    assert after - before >= 0.3
