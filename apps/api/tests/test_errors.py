"""Contract of error responses: RFC 9457 problem+json everywhere, request ids, body limits, never a 500."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from problem_assertions import assert_problem

JSON = {"content-type": "application/json"}


def record_path(external_id: str = "r-1") -> str:
    return f"/api/v1/records/err-{uuid.uuid4().hex[:12]}/deal/{external_id}"


@pytest.fixture(scope="module")
async def lenient(app, api_keys):
    """An admin client that gets a 500 back as a response instead of the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test", headers=headers) as http:
        yield http


BAD_REQUESTS = [
    pytest.param("GET", "/api/v1/records?colour=red", {}, None, 400, id="unknown-parameter"),
    pytest.param("GET", "/api/v1/records", {"Authorization": "Basic xyz"}, None, 401, id="not-bearer"),
    pytest.param("GET", f"/api/v1/records/{uuid.uuid4()}", {}, None, 404, id="unknown-record"),
    pytest.param("GET", "/api/v1/nothing-here", {}, None, 404, id="unknown-route"),
    pytest.param("PATCH", record_path(), JSON, b'{"data": {}}', 405, id="wrong-method"),
    pytest.param("PUT", record_path(), {"If-Match": '"9"', **JSON}, b'{"data": {}}', 412, id="precondition"),
    pytest.param("POST", "/api/v1/records:bulk", {"content-type": "text/csv"}, b"a,b", 415, id="media-type"),
    pytest.param("GET", "/api/v1/records/not-a-uuid", {}, None, 422, id="invalid-path"),
    pytest.param("GET", "/api/v1/records?limit=0", {}, None, 422, id="limit-zero"),
    pytest.param("GET", "/api/v1/records?limit=many", {}, None, 422, id="limit-not-a-number"),
    pytest.param("PUT", record_path(), JSON, b"{", 400, id="malformed-json"),
]


@pytest.mark.parametrize(("method", "url", "headers", "content", "status"), BAD_REQUESTS)
async def test_every_error_is_a_problem_with_type_title_status_detail_and_instance(
    lenient, method, url, headers, content, status
):
    body = assert_problem(await lenient.request(method, url, headers=headers, content=content), status)
    assert all(isinstance(body[field], str) for field in ("type", "title", "detail", "instance"))


async def test_put_with_malformed_json_is_a_400_problem_not_422(lenient):
    response = await lenient.put(record_path(), content=b'{"data": {', headers=JSON)
    assert assert_problem(response, 400)["title"] == "Malformed JSON"


async def test_an_unknown_route_is_a_404_problem(lenient):
    body = assert_problem(await lenient.get("/api/v2/records"), 404)
    assert body["title"] == "Not found"


async def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(lenient):
    response = await lenient.patch(record_path(), json={"data": {}})
    assert_problem(response, 405)
    assert response.headers["allow"] == "PUT"


async def test_put_with_content_length_over_max_body_bytes_is_a_413_problem_and_writes_nothing(
    lenient, settings
):
    path = record_path()
    content = b'{"data": {"pad": "' + b"x" * settings.max_body_bytes + b'"}}'
    body = assert_problem(await lenient.put(path, content=content, headers=JSON), 413)
    assert body["max_bytes"] == settings.max_body_bytes
    source_system = path.split("/")[4]
    listed = await lenient.get("/api/v1/records", params={"source_system": source_system})
    assert listed.json()["items"] == []


async def test_put_with_a_body_of_exactly_max_body_bytes_is_accepted(lenient, settings):
    envelope = b'{"data": {"pad": "' + b'"}}'
    content = b'{"data": {"pad": "' + b"x" * (settings.max_body_bytes - len(envelope)) + b'"}}'
    assert len(content) == settings.max_body_bytes
    assert (await lenient.put(record_path(), content=content, headers=JSON)).status_code == 201


async def test_put_streamed_without_content_length_over_max_body_bytes_is_a_413_problem(lenient, settings):
    async def oversized() -> AsyncIterator[bytes]:
        yield b'{"data": {"pad": "'
        yield b"x" * settings.max_body_bytes
        yield b'"}}'

    body = assert_problem(await lenient.put(record_path(), content=oversized(), headers=JSON), 413)
    assert body["max_bytes"] == settings.max_body_bytes


async def test_the_request_id_sent_is_echoed_back(lenient):
    response = await lenient.get("/healthz", headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"


async def test_the_request_id_is_echoed_on_errors_too(lenient, settings):
    headers = {"X-Request-ID": "trace-error-1", **JSON}
    responses = [
        await lenient.get("/api/v1/nothing-here", headers=headers),
        await lenient.put(record_path(), content=b"x" * (settings.max_body_bytes + 1), headers=headers),
    ]
    assert [response.headers["x-request-id"] for response in responses] == ["trace-error-1"] * 2


@pytest.mark.parametrize(
    "request_id",
    [b"x" * 129, b"has space", b'quote"d', b"tab\tin", b"semi;colon"],
    ids=["129-chars", "space", "quote", "tab", "semicolon"],
)
async def test_a_request_id_too_long_or_with_other_characters_is_a_400_and_nothing_is_read(
    lenient, request_id
):
    path = record_path()
    headers = {b"X-Request-ID": request_id, b"Content-Type": b"application/json"}
    response = await lenient.put(path, content=b'{"data": {}}', headers=headers)
    body = assert_problem(response, 400)
    assert "X-Request-ID must be 1 to 128 characters" in body["detail"]
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])  # a fresh one, not theirs
    listed = await lenient.get("/api/v1/records", params={"source_system": path.split("/")[4]})
    assert listed.json()["items"] == []  # nothing was written


async def test_a_request_id_is_generated_for_each_request_that_has_none(lenient):
    first, second = (await lenient.get("/healthz"), await lenient.get("/healthz"))
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert ids[0] != ids[1]


def test_forked_workers_do_not_repeat_each_others_request_ids():
    """Ids come from `random`, not `os.urandom` (whose syscall lets go of the interpreter's lock on
    the event loop); the server forks its workers, and each must draw its own sequence."""
    import os

    from sophia.api.middleware import new_request_id

    new_request_id()  # the parent's generator is in use before the fork, as a server's would be
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.write(write, "".join(new_request_id() for _ in range(4)).encode())
        finally:
            os._exit(0)  # never back into the test session, whatever happened
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode()
    ours = "".join(new_request_id() for _ in range(4))
    assert re.fullmatch(r"[0-9a-f]{128}", theirs)
    assert theirs != ours


@pytest.mark.parametrize(
    ("external_id", "data"),
    [("a%00b", {}), ("r-1", {"note": "a\u0000b"}), ("r-1", {"a\u0000b": 1})],
    ids=["in-external-id", "in-data-value", "in-data-key"],
)
async def test_put_with_a_nul_character_is_422_not_500(lenient, external_id, data):
    assert_problem(await lenient.put(record_path(external_id), json={"data": data}), 422)


async def test_put_stores_an_integer_beyond_orjson_limits_as_bulk_does(lenient):
    data = b'{"n": 100000000000000000000000000000}'  # nesting has its own limit: test_document_limits
    response = await lenient.put(record_path(), content=b'{"data": ' + data + b"}", headers=JSON)
    assert response.status_code == 201, response.text
    stored = await lenient.get(response.headers["location"])
    assert b"100000000000000000000000000000" in stored.content


async def test_put_with_nan_in_data_is_refused_rather_than_stored_as_null(lenient):
    response = await lenient.put(record_path(), content=b'{"data": {"n": NaN}}', headers=JSON)
    assert response.status_code in {400, 422}, response.text


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize(
    "tag", [b'"99999999999999999999999"', b'"\xb2"'], ids=["beyond-int64", "superscript"]
)
async def test_if_match_that_is_no_version_this_api_issues_is_400_not_500(lenient, method, tag):
    content = b'{"data": {}}' if method == "PUT" else None
    response = await lenient.request(
        method, record_path(), content=content, headers={"If-Match": tag, **JSON}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "parameter", [{"data.note": "a\u0000b"}, {"data.a\u0000b": "x"}], ids=["value", "key"]
)
async def test_list_with_a_nul_character_in_a_data_filter_is_4xx_not_500(lenient, parameter):
    response = await lenient.get("/api/v1/records", params=parameter)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.status_code in {400, 422}, response.text


async def test_an_unexpected_error_is_a_500_problem_that_leaks_no_detail(settings):
    from sophia.api.app import create_app

    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        response = await http.get("/boom")
    body = assert_problem(response, 500)
    assert "secret" not in response.text
    assert body["title"] == "Internal error"


async def test_a_service_error_of_no_known_kind_is_a_500_problem_with_its_title_and_detail(settings):
    from sophia.api.app import create_app
    from sophia.core.errors import SophiaError

    app = create_app(settings)

    async def unclassified() -> None:
        raise SophiaError("a rule no status describes")

    app.add_api_route("/unclassified", unclassified)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test") as http:
        body = assert_problem(await http.get("/unclassified"), 500)
    assert (body["title"], body["detail"]) == ("Error", "a rule no status describes")


async def test_every_503_is_answered_but_a_flood_of_them_leaves_a_sample_of_warnings(capsys):
    """A client that keeps a busy model busy gets 503 after 503; each says so, the log says so at
    most `SOPHIA_LOG_CLIENT_LINES_PER_S` times a second (a burst of twice that) of each kind, and
    the flood does not use up the lines of another layer's 503s (an outage seen by the key gate)."""
    from starlette.requests import Request

    from sophia.api.problems import LOG_KIND_KEY, sophia_error
    from sophia.core.errors import Unavailable
    from sophia.shared.logging import CLIENT_LINES, CLIENT_LINES_PER_S

    def refused_at(layer: str) -> Request:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/embeddings",
            "headers": [],
            "query_string": b"",
        }
        return Request({**scope, LOG_KIND_KEY: layer})

    CLIENT_LINES.reset(1.0)
    try:
        capsys.readouterr()
        busy = [
            await sophia_error(refused_at("models"), Unavailable("The model is busy.", 2)) for _ in range(5)
        ]
        down = await sophia_error(refused_at("key gate"), Unavailable("PostgreSQL is unreachable.", 1))
        written = capsys.readouterr().err
    finally:
        CLIENT_LINES.reset(CLIENT_LINES_PER_S)
    assert [(answer.status_code, answer.headers["retry-after"]) for answer in busy] == [(503, "2")] * 5
    assert written.count("The model is busy.") == 2  # a warning line each, in whichever format
    assert (down.status_code, written.count("PostgreSQL is unreachable.")) == (503, 1)
