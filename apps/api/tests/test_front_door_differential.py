"""The front doors against the long way, request for request: whatever a client sends, the answer
`answer_hit` or `HotReads` (a read of a record by id) and `answer_put` (a record PUT) give is the
one the FastAPI route gives to the same request, and no answer is a 5xx.

Each generated request is handed over as an ASGI scope (what a server hands the application,
repeated headers and all), several ways:

- "front door": the application as a server calls it (`SophiaApi.__call__`);
- "route" (a PUT) or "HotReads" (a GET): `FastAPI.__call__` of the same application, with the same
  state, remembered keys and L1: where the front door hands on what it does not answer. A GET
  there still meets `HotReads`, the inner front door, so a GET is also sent to
- "route" (a GET): `FastAPI.__call__` of a second application on the same engines, built without
  `HotReads`.

A write changes what the next one finds, so each side of a PUT writes a record of its own: a
generated path names its record under a `source_system` made for each side (of one length, so
that the answers' sizes agree), which is blanked in both answers before they are compared; what
differs between two records anyway (id, timestamps, Location) is checked for its shape instead.

What it found, fixed, and kept below as explicit examples (`FOUND`): the front door for reads
took the last of a repeated `Authorization`, `If-None-Match` or `X-Request-ID`, where the whole
path takes the first (it now leaves a request with a repeated header to the application, as the
one for writes did); it answered a read that declares a body over the limit, which the whole path
refuses (413: a GET that declares a body now goes the whole way); and, under a server's root path,
both front doors for reads matched the whole path where the routes match what follows the root
path (they now leave such a request to the application). And a `Content-Length` of a digit `int`
does not read (a superscript two) was a 500 on any route.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import uuid
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from json_strategies import json_values as json_values_of
from metrics import sample

from sophia.api.app import create_app
from sophia.api.hot import HotReads
from sophia.api.hot_writes import record_key_of
from sophia.api.middleware import REQUEST_ID

MAX_BODY = 2048
"""The apps' `max_body_bytes` (1024 at least): bodies around it are cheap to make."""
EXAMPLES = int(os.environ.get("SOPHIA_FRONT_DOOR_EXAMPLES", "25"))
"""Generated requests per test; more for a campaign (`SOPHIA_FRONT_DOOR_EXAMPLES=5000`)."""
FRESH = "{fresh}"
"""In a generated PUT path: a `source_system` of each side's own, new for each request."""
IDENTIFIER = re.compile(r"[a-z][a-z0-9_\-]{0,62}")
OURS = re.compile(rb"[0-9a-f]{32}")
"""A request id the application made (`new_request_id`)."""
MATTER = frozenset(
    {
        b"content-type",
        b"etag",
        b"cache-control",
        b"location",
        b"retry-after",
        b"www-authenticate",
        b"content-length",
        b"warning",
        b"x-request-id",
    }
)
"""The headers compared (in the order each answer gives them)."""


# --- sending -------------------------------------------------------------------------------


@dataclass
class Sent:
    """A request as generated: key secrets stand as `<read>`, `<write>`, `<admin>` in headers."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes] = field(default_factory=lambda: [b""])
    query: bytes = b""
    disconnect: bool = False
    """The client goes away instead of sending the last piece of the body."""
    existing: bool = False
    """(A PUT) the record its path names is written first, on each side, with `SEED`."""
    root_path: str = ""
    """Where the server says the application is mounted (its `root_path`); the path includes it."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    error: BaseException | None


@dataclass(frozen=True)
class Keys:
    read: str
    write: str
    admin: str

    def secrets(self, value: bytes) -> bytes:
        for name in ("read", "write", "admin"):
            value = value.replace(f"<{name}>".encode(), getattr(self, name).encode())
        return value


async def send_to(
    app: FastAPI, keys: Keys, sent: Sent, path: str, client: tuple[str, int], *, past: bool
) -> Answer:
    """`sent` to `app` at `path` as a server hands it over: through the front door, or `past` it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": sent.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": sent.query,
        "root_path": sent.root_path,
        "headers": [(name, keys.secrets(value)) for name, value in sent.headers],
        "client": client,
        "server": ("sophia.test", 80),
    }
    chunks = sent.chunks or [b""]
    messages: list[dict] = [
        {"type": "http.request", "body": chunk, "more_body": number < len(chunks) - 1}
        for number, chunk in enumerate(chunks)
    ]
    if sent.disconnect:
        messages[-1] = {"type": "http.disconnect"}
    answered = asyncio.Event()
    given_back: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        given_back.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    error = None
    try:
        await (FastAPI.__call__(app, scope, receive, send) if past else app(scope, receive, send))
    except Exception as raised:  # after its 500, the application raises again for the server
        error = raised
    starts = [message for message in given_back if message["type"] == "http.response.start"]
    assert len(starts) == 1, (given_back, error)
    body = b"".join(m.get("body", b"") for m in given_back if m["type"] == "http.response.body")
    return Answer(starts[0]["status"], list(starts[0]["headers"]), body, error)


_addresses = itertools.count(1)


def new_client() -> tuple[str, int]:
    """An address of each request's own: bad keys count against an address (429 after 20), and
    each side of one request must meet the same count."""
    number = next(_addresses)
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", 40000


# --- generating ----------------------------------------------------------------------------


def latin1(*values: str) -> st.SearchStrategy[bytes]:
    return st.sampled_from([value.encode("latin-1") for value in values])


def headers_of(
    draw, choices: dict[bytes, tuple[bytes | None, st.SearchStrategy[bytes]]]
) -> list[tuple[bytes, bytes]]:
    """Each header as a plain request has it (`None`: none), but for a few made odd: left out,
    given another value, or sent twice (the plain value and another, or two others)."""
    odd_ones = draw(st.sets(st.sampled_from(list(choices)), max_size=3))
    headers: list[tuple[bytes, bytes]] = []
    for name, (plain, odd) in choices.items():
        how = draw(st.sampled_from(["none", "odd", "odd", "twice"])) if name in odd_ones else "plain"
        if how == "plain":
            values = [] if plain is None else [plain]
        elif how == "odd":
            values = [draw(odd)]
        elif how == "twice":
            values = draw(st.permutations([plain if plain is not None else draw(odd), draw(odd)]))
        else:
            values = []
        headers += [(name, value) for value in values]
    return draw(st.permutations(headers)) if not draw(st.integers(0, 3)) else headers


AUTHORIZATIONS = st.one_of(
    latin1(
        "Bearer <write>",
        "Bearer <admin>",
        "Bearer <read>",
        "bearer <write>",
        "BEARER <read>",
        "Bearer   <write>  ",
        "Bearer <write>\t",
        "Bearer <write> x",
        "Bearer <write>x",
        "Bearer sk_0123abcd_" + "A" * 43,  # a key's shape, never issued
        "Bearer sk_nope",
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "",
        "Token <write>",
    ),
    st.binary(max_size=12),
)
REQUEST_IDS = latin1("trace-1", "trace-2", "a" * 128, "a" * 129, "bad id", "", "t\u00e9", "x/y:z=+.")
QUERIES = st.sampled_from([b"", b"", b"", b"x=1", b"%ff", b"data.a=1&limit=2", b"?", b"a=%00"])
ROOT_PATHS = st.sampled_from([""] * 12 + ["/api", "/api/v1/records", "/sophia", "/"])
"""Mostly none; now and then one a server was told (`--root-path`), the path starting with it."""


# What a GET names

SPELLINGS = {
    "canonical": lambda id_: id_,
    "upper": lambda id_: id_.upper(),
    "partly upper": lambda id_: id_[:8].upper() + id_[8:],
    "hex": lambda id_: id_.replace("-", ""),
    "braces": lambda id_: "{" + id_ + "}",
    "urn": lambda id_: "urn:uuid:" + id_,
    "slash after": lambda id_: id_ + "/",
    "space after": lambda id_: id_ + " ",
    "space first": lambda id_: " " + id_[1:],
    "short": lambda id_: id_[:-1],
    "not hex": lambda id_: id_[:-1] + "g",
    "arabic digit": lambda id_: id_[:-1] + "\u0663",  # int() reads it; a UUID has none
    "newline": lambda id_: id_[:35] + "\n",
    "underscores": lambda id_: id_.replace("-", "_"),
}
"""Ways to name, or nearly name, a record by its id."""
RECORDS = ("cached", "deleted", "fresh", "absent")
"""In L1; deleted; written just now (not in L1: the front door loads it); never written."""


@dataclass
class Read:
    sent: Sent
    record: str
    """One of `RECORDS`."""
    spelling: str
    """One of `SPELLINGS`, or the text after `/api/v1/records/` (of a canonical id's length)."""


@st.composite
def reads(draw) -> Read:
    """A GET of a record by id, spelled some way, its headers plain but for a few made odd."""
    record = draw(st.sampled_from(["cached", "cached", "cached", "deleted", "fresh", "fresh", "absent"]))
    canonical = st.just("canonical")
    spelling = draw(
        st.one_of(
            canonical,
            canonical,
            canonical,
            st.sampled_from(list(SPELLINGS)),
            st.text(min_size=36, max_size=36),
        )
    )
    etag = draw(st.sampled_from(['"1"', '"2"']))
    headers = headers_of(
        draw,
        {
            b"authorization": (b"Bearer <read>", AUTHORIZATIONS),
            b"if-none-match": (
                None,
                latin1(etag, f"W/{etag}", "*", '"9"', f'"9", {etag}', etag[1:-1], "", " , "),
            ),
            b"x-request-id": (None, REQUEST_IDS),
            b"content-length": (None, latin1("0", "4", str(MAX_BODY), str(MAX_BODY + 1), "99999999999")),
            b"content-encoding": (None, latin1("gzip", "identity")),
        },
    )
    chunks = draw(st.sampled_from([[b""], [b""], [b"{}"], [b"ab", b"cd"]]))
    sent = Sent("GET", "", headers, chunks, draw(QUERIES), root_path=draw(ROOT_PATHS))
    return Read(sent, record, spelling)


# What a PUT sends

SEED = b'{"data": {"seed": 1}}'
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = json_values_of(json_scalars, key_size=6, max_leaves=8)
CREATED_AT = st.sampled_from(
    [
        "2026-03-01T09:30:00Z",
        "2026-03-01T09:30:00.123456+02:00",
        "2026-03-01T09:30:00",  # no offset: refused
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "9999-12-31T23:59:59.999999Z",
        "2026-13-01T00:00:00Z",
        "",
        None,
        12345,
        1e300,
        True,
        [],
    ]
)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


ODD_BODIES = [
    b"",
    b" ",
    b"{",
    b"null",
    b"[]",
    b'"data"',
    b"1",
    b"{}",
    b'{"data": null}',
    b'{"data": []}',
    b'{"data": "x"}',
    b'{"data": 1}',
    b'{"data": {}, "extra": 1}',
    b'{"data": {}, "data": {"v": 2}}',
    b'{"DATA": {}}',
    b'{"data": {"v": NaN}}',
    b'{"data": {"v": Infinity}}',
    b'{"data": {"v": -Infinity}}',
    b'{"data": {"v": 1e400}}',
    b'{"data": {"v": -1e400}}',
    b'{"data": {"v": 1e-400}}',
    b'{"data": {"v": ' + b"9" * 4300 + b"}}",
    b'{"data": {"v": ' + b"9" * 4301 + b"}}",
    b'{"data": {"v": -' + b"9" * 4301 + b"}}",
    b'{"data": {"v": 1.' + b"5" * 1500 + b"}}",
    b'{"data": {"v": 18446744073709551616}}',
    b'{"data": {"v": "\\ud800"}}',
    b'{"data": {"v": "\\udfff\\ud800"}}',
    b'{"data": {"\\ud800": 1}}',
    b'{"data": {"a": {"\\udc00x": 1}}}',
    b'{"\\ud800": 1, "data": {}}',
    b'{"data": {"v": "\xed\xa0\x80"}}',  # a surrogate UTF-8 encoded (which UTF-8 forbids)
    b'{"data": {"v": "\\u0000"}}',
    b'{"data": {"\\u0000": 1}}',
    b'{"data": {"v": "a\x00b"}}',
    b'{"data": {}}\x00',
    b'\x00{"data": {}}',
    b'{"data": {"v": "\xff"}}',
    b'{"data": {"v": "\xc3"}}',
    b'\xef\xbb\xbf{"data": {"v": 1}}',
    '{"data": {"v": 1}}'.encode("utf-16"),
    '{"data": {"v": 1}}'.encode("utf-16-le"),
    '{"data": {"v": 1}}'.encode("utf-32"),
    b'{"data": {"v": 1}} x',
    b'  {"data": {"v": 1}}  \n',
    b'{"data": {"v": 1},}',
    b"{'data': {}}",
    b'{"data": {"v": ' + nested(126) + b"}}",
    b'{"data": {"v": ' + nested(127) + b"}}",
    b'{"data": {"v": ' + nested(200) + b"}}",
    b'{"data": {"v": ' + nested(900) + b"}}",
    b'{"data": ' * 1000 + b"1" + b"}" * 1000,
    b'{"data": {"v": "' + b"x" * (MAX_BODY - 17) + b'"}}',  # MAX_BODY bytes
    b'{"data": {"v": "' + b"x" * (MAX_BODY - 16) + b'"}}',  # one over
    b'{"data": {"v": "\\"' + b"[" * 300 + b'"}}',
]


@st.composite
def bodies(draw, plain: bool) -> bytes:
    """A body `RecordWrite` takes (`plain`), else (mostly) one of every odd kind."""
    if plain or not draw(st.integers(0, 5)):
        document: dict = {"data": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))}
        if not draw(st.integers(0, 3)):
            document["created_at"] = draw(CREATED_AT)
        return json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return draw(st.sampled_from(ODD_BODIES))


path_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
BAD_SOURCES = st.one_of(
    st.sampled_from(["", "Hubspot", "1abc", "-a", "a b", "a\n", "é", "a" * 64, "a.b", "ab\x00", " a"]),
    path_text.filter(lambda text: "/" not in text and not IDENTIFIER.fullmatch(text)),
)
KINDS = st.sampled_from(["deal", "deal", "a", "a-_9", "z" * 63])
BAD_KINDS = st.one_of(st.sampled_from(["z" * 64, "Deal", "deal\n", "deal ", "", "dé", "d\x00"]), path_text)
EXTERNAL_IDS = st.one_of(
    st.just("d-1"),
    st.sampled_from(["Deal 7: ü", "x" * 256, "é" * 256, "😀" * 256, ".", "..", "a?b", "a#b", "a%2Fb"]),
    st.sampled_from([" ", "\n", "a\n", "\t", "\r\n", "\u2028", "\ufeff", "\U0010ffff"]),
    path_text.filter(lambda text: text and "/" not in text and "\x00" not in text),
    st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=250, max_size=256
    ),
)
BAD_EXTERNAL_IDS = st.one_of(
    st.sampled_from(["x" * 257, "😀" * 257, "a\x00b", "\x00", "", "a/b"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=255, max_size=260),
)
TAILS = st.sampled_from(["/", "/x", "//", "/" + "x" * 300])
PARTS = ("source", "kind", "external id", "tail", "body")


@st.composite
def writes(draw) -> Sent:
    """A PUT of a record: path, headers and body plainly valid, but for a few parts made odd."""
    odd = draw(st.sets(st.sampled_from(PARTS), max_size=2)) if draw(st.booleans()) else set()
    source = draw(BAD_SOURCES) if "source" in odd else FRESH
    kind = draw(BAD_KINDS if "kind" in odd else KINDS)
    external_id = draw(BAD_EXTERNAL_IDS if "external id" in odd else EXTERNAL_IDS)
    path = f"/api/v1/records/{source}/{kind}/{external_id}" + (draw(TAILS) if "tail" in odd else "")
    body = draw(bodies(plain="body" not in odd))
    length = str(len(body))
    headers = headers_of(
        draw,
        {
            b"authorization": (b"Bearer <write>", AUTHORIZATIONS),
            b"content-type": (
                b"application/json",
                latin1(
                    "Application/JSON",
                    "application/json; charset=utf-8",
                    "application/json;charset=latin-1",
                    "application/merge-patch+json",
                    "application/json ",
                    "text/plain",
                    "application/x-ndjson",
                    "",
                ),
            ),
            b"content-length": (
                length.encode(),
                latin1(
                    str(len(body) + 1),
                    str(max(len(body) - 1, 0)),
                    "0",
                    "0" + length,
                    "+" + length,
                    " " + length,
                    length + " ",
                    "-1",
                    "abc",
                    "",
                    str(MAX_BODY),
                    str(MAX_BODY + 1),
                    "9" * 30,
                ),
            ),
            b"if-match": (
                None,
                latin1(
                    '"1"',
                    'W/"1"',
                    '"2"',
                    '"7"',
                    "*",
                    "1",
                    '"x"',
                    "",
                    ' "1" ',
                    '"1", "2"',
                    '"' + "9" * 19 + '"',
                ),
            ),
            b"if-none-match": (None, latin1("*", " * ", '"1"', "", "*, *")),
            b"x-request-id": (None, REQUEST_IDS),
            b"content-encoding": (None, latin1("gzip", "identity", "", "identity, gzip")),
            b"transfer-encoding": (None, latin1("chunked")),
        },
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    disconnect = len(chunks) > 1 and not draw(st.integers(0, 15))
    existing = draw(st.booleans())
    return Sent("PUT", path, headers, chunks, draw(QUERIES), disconnect, existing, draw(ROOT_PATHS))


# --- comparing -----------------------------------------------------------------------------


def first(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def comparable(answer: Answer, sent: Sent, source: str | None) -> tuple:
    """What must agree between two answers to `sent`: the status, the headers that matter in their
    order, the body; the side's own source blanked, and what names one record (its id and
    timestamps, the Location, the size they give the body, a request id the app made) checked
    for its shape and blanked."""

    def blank(value: bytes) -> bytes:
        return value.replace(source.encode(), b"<source>") if source else value

    headers = [(name, blank(value)) for name, value in answer.headers if name in MATTER]
    given, ours = first(sent.headers, b"x-request-id"), first(answer.headers, b"x-request-id")
    if given is not None and REQUEST_ID.fullmatch(given.decode("latin-1")):
        request_id = b"<the first given>" if ours == given else ours
    else:
        request_id = b"<one of ours>" if ours is not None and OURS.fullmatch(ours) else ours
    if first(answer.headers, b"content-length") is not None:
        assert first(answer.headers, b"content-length") == str(len(answer.body)).encode()
    body: object = blank(answer.body)
    if sent.method == "PUT" and answer.status in (200, 201) and b'"id"' in answer.body:
        record = json.loads(answer.body)
        location = first(answer.headers, b"location")
        assert (location is not None) == (answer.status == 201)
        assert location in (None, f"/api/v1/records/{record['id']}".encode())
        record["id"] = record["created_at"] = record["updated_at"] = "-"
        body = blank(json.dumps(record, sort_keys=True).encode())
        headers = [(name, value) for name, value in headers if name not in (b"location", b"content-length")]
    headers = [(name, request_id if name == b"x-request-id" else value) for name, value in headers]
    return answer.status, headers, body


def assert_alike(answers: dict[str, Answer], sent: Sent, sources: dict[str, str | None]) -> None:
    for side, answer in answers.items():
        assert answer.status < 500, (side, answer)
        assert answer.error is None, (side, answer)
    seen = {side: comparable(answer, sent, sources.get(side)) for side, answer in answers.items()}
    sides = list(seen)
    for side in sides[1:]:
        assert seen[side] == seen[sides[0]], f"{sides[0]} and {side} answer {sent!r} differently"


# --- the apps ------------------------------------------------------------------------------


@dataclass
class Doors:
    front: FastAPI
    plain: FastAPI
    """On the same engines, without `HotReads`: a GET there is the route's."""
    keys: Keys
    ids: dict[str, str]
    """The record id of "cached" and of "deleted"."""

    async def put(self, path: str) -> dict:
        """`SEED` written at `path` the long way."""
        sent = Sent(
            "PUT",
            path,
            [(b"authorization", b"Bearer <write>"), (b"content-type", b"application/json")],
            [SEED],
        )
        answer = await send_to(self.front, self.keys, sent, path, new_client(), past=True)
        assert answer.status in (200, 201), answer
        return json.loads(answer.body)


def new_source() -> str:
    return f"fd{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def doors(settings, api_keys) -> Doors:
    """Both apps, the keys remembered by them for the whole module (so that the front doors take
    them), a body limit of `MAX_BODY`; a record in L1 and one deleted."""
    own = settings.model_copy(update={"api_key_cache_ttl_s": 3600.0, "max_body_bytes": MAX_BODY})
    front, plain = create_app(own), create_app(own)
    plain.user_middleware = [entry for entry in plain.user_middleware if entry.cls is not HotReads]
    keys = Keys(api_keys["read"], api_keys["write"], api_keys["admin"])
    async with front.router.lifespan_context(front), plain.router.lifespan_context(plain):
        doors = Doors(front, plain, keys, {})
        source = new_source()
        for name in ("cached", "deleted"):
            doors.ids[name] = (await doors.put(f"/api/v1/records/{source}/deal/{name}"))["id"]
        path = f"/api/v1/records/{source}/deal/deleted"
        delete = Sent("DELETE", path, [(b"authorization", b"Bearer <write>")])
        assert (await send_to(front, keys, delete, path, new_client(), past=True)).status == 204
        for secret in ("read", "admin"):
            for app in (front, plain):
                path = f"/api/v1/records/{doors.ids['cached']}"
                read = Sent("GET", path, [(b"authorization", f"Bearer <{secret}>".encode())])
                assert (await send_to(app, keys, read, path, new_client(), past=True)).status == 200
        yield doors


# --- the tests -----------------------------------------------------------------------------

GENERATED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def reading(*headers: tuple[bytes, bytes]) -> Read:
    """A GET of the cached record by its canonical id, by the remembered read key, with `headers`."""
    return Read(Sent("GET", "", [(b"authorization", b"Bearer <read>"), *headers]), "cached", "canonical")


FOUND = [
    # The front door took the last Authorization, KeyGate the first: 200 where the route says 401.
    Read(
        Sent("GET", "", [(b"authorization", b"Bearer sk_nope"), (b"authorization", b"Bearer <read>")]),
        "cached",
        "canonical",
    ),
    # The front door matched the last If-None-Match, the route the first: 304 where it says 200.
    reading((b"if-none-match", b'"9"'), (b"if-none-match", b'"1"')),
    # The front door took the last X-Request-ID, RequestContext the first: 200 where it says 400.
    reading((b"x-request-id", b"bad id"), (b"x-request-id", b"trace-1")),
    # The front door did not look at Content-Length: 200 where RequestContext answers 413.
    reading((b"content-length", str(MAX_BODY + 1).encode())),
    # Mounted at /api (a client's GET /v1/records/{id}), the route matches /v1/records/{id}: no
    # such route, 404; both front doors matched the whole path, and answered 200.
    Read(Sent("GET", "", [(b"authorization", b"Bearer <read>")], root_path="/api"), "cached", "canonical"),
]


@GENERATED
@example(read=FOUND[0])
@example(read=FOUND[1])
@example(read=FOUND[2])
@example(read=FOUND[3])
@example(read=FOUND[4])
@given(read=reads())
async def test_a_read_is_answered_by_each_front_door_as_the_route_answers_it(doors, read):
    if read.record == "fresh":  # not in L1: the front door loads it
        record_id = (await doors.put(f"/api/v1/records/{new_source()}/deal/r"))["id"]
    else:
        record_id = doors.ids.get(read.record) or str(uuid.uuid4())
    spelled = SPELLINGS[read.spelling](record_id) if read.spelling in SPELLINGS else read.spelling
    path = "/api/v1/records/" + spelled
    if not path.startswith(read.sent.root_path):  # a server puts its root path before the path
        path = read.sent.root_path + path
    client = new_client()
    before = sample("sophia_api_hot_reads_total") + sample("sophia_api_direct_reads_total")
    answers = {
        "front door": await send_to(doors.front, doors.keys, read.sent, path, client, past=False),
        "HotReads": await send_to(doors.front, doors.keys, read.sent, path, client, past=True),
        "route": await send_to(doors.plain, doors.keys, read.sent, path, client, past=True),
    }
    after = sample("sophia_api_hot_reads_total") + sample("sophia_api_direct_reads_total")
    event(f"GET {answers['route'].status}, {'some' if after > before else 'no'} front door answered")
    assert_alike(answers, read.sent, {})


@GENERATED
@given(sent=writes())
async def test_a_write_is_answered_by_the_front_door_as_the_route_answers_it(doors, sent):
    paths, sources = {}, {}
    for side in ("front door", "route"):
        sources[side] = source = new_source() if FRESH in sent.path else None
        path = sent.path.replace(FRESH, source) if source else sent.path
        if sent.existing and record_key_of(path) is not None:
            await doors.put(path)
        paths[side] = path if path.startswith(sent.root_path) else sent.root_path + path
    client = new_client()
    before = sample("sophia_api_direct_writes_total")
    answers = {
        side: await send_to(doors.front, doors.keys, sent, paths[side], client, past=side == "route")
        for side in ("front door", "route")
    }
    front = "front door wrote" if sample("sophia_api_direct_writes_total") > before else "handed on"
    event(f"PUT {answers['route'].status}, {front}")
    assert_alike(answers, sent, sources)


async def test_a_content_length_of_digits_int_does_not_read_is_no_5xx(doors):
    """`str.isdigit` takes a superscript two (`\\xb2` read as latin-1) for a digit, `int` does not:
    RequestContext's check of the declared length raised (a 500), on any route. (granian and
    uvicorn, h11 or httptools, refuse such a header with a 400 of their own before the application
    sees it; a server or client that hands the application ASGI scopes unchecked does not.)"""
    path = f"/api/v1/records/{doors.ids['cached']}"
    sent = Sent("GET", path, [(b"authorization", b"Bearer <read>"), (b"content-length", b"\xb2")])
    answers = {
        "front door": await send_to(doors.front, doors.keys, sent, path, new_client(), past=False),
        "route": await send_to(doors.plain, doors.keys, sent, path, new_client(), past=True),
    }
    assert_alike(answers, sent, {})
