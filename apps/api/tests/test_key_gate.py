"""The key is checked before a body is read, and a flood of made-up keys barely reaches PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from metrics import sample
from problem_assertions import assert_problem
from waiting import eventually

MADE_UP = "sk_0123abcd_" + "A" * 43
GATED = [
    ("POST", "/api/v1/records:bulk", "application/x-ndjson"),
    ("POST", "/api/v1/events", "application/json"),
    ("PUT", "/api/v1/records/gate/deal/1", "application/json"),
    ("POST", "/v1/embeddings", "application/json"),
    ("POST", "/api/v1/search", "application/json"),
]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def key_lookups() -> float:
    return sample("sophia_api_key_lookups_total")


def client_from(app, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://sophia.test")


class NeverEnding:
    """A request body that sends one line and then waits for ever, noting whether it was read."""

    def __init__(self) -> None:
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield b'{"a": 1}\n'
        await asyncio.Event().wait()


@pytest.mark.parametrize(("method", "path", "content_type"), GATED, ids=[path for _, path, _ in GATED])
@pytest.mark.parametrize(
    "authorization", [None, "Basic abc", f"Bearer {MADE_UP}"], ids=["none", "not-bearer", "unknown"]
)
async def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(
    app, method, path, content_type, authorization
):
    body = NeverEnding()
    headers = {"Content-Type": content_type} | ({"Authorization": authorization} if authorization else {})
    async with client_from(app, "192.0.2.10") as http:
        async with asyncio.timeout(5):
            response = await http.request(method, path, content=body, headers=headers)
    assert_problem(response, 401)
    assert not body.read


async def test_an_unknown_key_is_looked_up_once_and_then_refused_from_memory(app):
    async with client_from(app, "192.0.2.11") as http:
        before = key_lookups()
        unknown = "sk_0123abce_" + "B" * 43
        for _ in range(5):
            assert_problem(
                await http.get("/api/v1/records", headers={"Authorization": f"Bearer {unknown}"}), 401
            )
    assert key_lookups() == before + 1


async def test_an_address_sending_bad_keys_gets_429_without_lookups_and_others_do_not(
    app, settings, api_keys
):
    limit = settings.auth_failure_limit
    async with client_from(app, "192.0.2.12") as flood, client_from(app, "192.0.2.13") as neighbour:
        before = key_lookups()
        answers = [
            await flood.get("/api/v1/records", headers=bearer(f"sk_{n:08x}_{'C' * 43}"))
            for n in range(limit + 30)
        ]
        assert [answer.status_code for answer in answers] == [401] * limit + [429] * 30
        assert key_lookups() - before == limit  # the 30 past the limit never reached PostgreSQL
        refused = assert_problem(answers[-1], 429)
        assert "keys that did not verify" in refused["detail"]
        assert 1 <= int(answers[-1].headers["retry-after"]) <= settings.auth_failure_window_s
        welcome = await neighbour.get(
            "/api/v1/records", headers={"Authorization": f"Bearer {api_keys['read']}"}
        )
        assert welcome.status_code == 200


async def test_made_up_keys_sent_at_once_are_held_to_the_limit_too(app, settings, api_keys):
    """Attempts still in flight count: a burst sent concurrently cannot all reach PostgreSQL."""
    limit = settings.auth_failure_limit
    async with client_from(app, "192.0.2.15") as flood:
        before = key_lookups()
        answers = await asyncio.gather(
            *(
                flood.get("/api/v1/records", headers=bearer(f"sk_{n:08x}_{'D' * 43}"))
                for n in range(limit * 3)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [401] * limit + [429] * (limit * 2)
        assert key_lookups() - before == limit
        # a valid key from the same address, once remembered, still passes; verifying one does
        # not count against the address
        async with client_from(app, "192.0.2.16") as fresh:
            for _ in range(limit + 5):
                ok = await fresh.get("/api/v1/records", headers=bearer(api_keys["read"]))
                assert ok.status_code == 200


async def test_the_routes_outside_the_api_need_no_key(app):
    async with client_from(app, "192.0.2.14") as http:
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert (await http.get(path)).status_code == 200


async def test_a_valid_key_checked_again_by_many_requests_at_once_is_looked_up_once_and_never_429(
    app, settings, api_keys
):
    """A valid key's check that is due (its memory lasts `api_key_cache_ttl_s`) is no guess: a
    burst of requests carrying it, past the failure limit, shares one lookup and is never refused."""
    verifier = app.state.sophia.keys
    async with client_from(app, "192.0.2.17") as http:
        verifier.forget(api_keys["read"])  # verified again below, remembered for 0.01 s, not 0.2 s
        with pytest.MonkeyPatch.context() as brief:
            brief.setattr(verifier, "ttl_s", 0.01)
            assert (await http.get("/api/v1/records", headers=bearer(api_keys["read"]))).status_code == 200
        await eventually(lambda: verifier.remembered(api_keys["read"]) is None)  # lapsed
        before = key_lookups()
        answers = await asyncio.gather(
            *(
                http.get("/api/v1/records", headers=bearer(api_keys["read"]))
                for _ in range(settings.auth_failure_limit * 3)
            )
        )
    assert [answer.status_code for answer in answers] == [200] * (settings.auth_failure_limit * 3)
    assert key_lookups() - before == 1


async def test_a_valid_key_never_seen_before_sent_by_many_requests_at_once_is_never_429(
    app, settings, api_keys, database
):
    """Clients reconnecting together after a restart: one key none of them had verified yet."""
    from sophia.database import keys

    async with database.connection() as connection:
        _, fresh = await keys.create(connection, "burst", "read")
    async with client_from(app, "192.0.2.18") as http:
        before = key_lookups()
        answers = await asyncio.gather(
            *(
                http.get("/api/v1/records", headers=bearer(fresh))
                for _ in range(settings.auth_failure_limit * 3)
            )
        )
    assert [answer.status_code for answer in answers] == [200] * (settings.auth_failure_limit * 3)
    assert key_lookups() - before == 1


async def test_a_blocked_address_still_admits_other_callers_keys_on_a_second_bounded_budget(
    app, settings, api_keys, database
):
    """Callers of one host share an address: one flooding it with made-up keys must not lock the
    others out. A key of an active key's prefix is still checked, on a second budget of the
    address's; past that, a secret this process verified before still passes."""
    from sophia.database import keys

    limit = settings.auth_failure_limit
    verifier = app.state.sophia.keys
    async with database.connection() as connection:
        _, innocent = await keys.create(connection, "gate-innocent", "read")
        _, stranger = await keys.create(connection, "gate-stranger", "read")
    guess = innocent[: len("sk_12345678_")]  # a public prefix, a made-up rest
    async with client_from(app, "192.0.2.19") as host:
        with pytest.MonkeyPatch.context() as brief:  # the prefixes read again 0.05 s on, not 5 s
            brief.setattr(verifier, "miss_ttl_s", 0.05)
            reads = sample("sophia_api_key_prefix_reads_total")
            for n in range(limit):
                await host.get("/api/v1/records", headers=bearer(f"sk_{n:08x}_{'E' * 43}"))
            blocked = await host.get("/api/v1/records", headers=bearer(f"sk_{limit:08x}_{'E' * 43}"))
            assert "from this address" in assert_problem(blocked, 429)["detail"]
            await asyncio.sleep(0.06)
            assert (await host.get("/api/v1/records", headers=bearer(innocent))).status_code == 200
            assert sample("sophia_api_key_prefix_reads_total") == reads + 1  # read once, blocked or not

        before = key_lookups()
        statuses = [
            (await host.get("/api/v1/records", headers=bearer(f"{guess}{n:043d}"))).status_code
            for n in range(limit + 5)
        ]
        assert statuses == [401] * limit + [429] * 5  # guesses at a known prefix: the second budget
        assert key_lookups() - before == limit  # so an address costs at most twice the limit
        refused = await host.get("/api/v1/records", headers=bearer(f"{guess}{'Z' * 43}"))
        assert "active keys' prefixes too" in assert_problem(refused, 429)["detail"]

        assert (await host.get("/api/v1/records", headers=bearer(innocent))).status_code == 200  # remembered
        await eventually(lambda: verifier.remembered(innocent) is None)  # its memory lapsed (ttl 0.2 s)
        before = key_lookups()
        assert (await host.get("/api/v1/records", headers=bearer(innocent))).status_code == 200
        assert key_lookups() == before + 1  # checked again, not refused
        # a key this process never verified waits out both budgets: what the flood can still do
        assert_problem(await host.get("/api/v1/records", headers=bearer(stranger)), 429)


async def test_a_key_created_while_its_address_is_blocked_is_admitted_once_the_prefixes_are_read_again(
    app, settings, database
):
    """The prefixes are read again at most once per `miss_ttl_s` (0.05 s here, 5 s by default)."""
    from sophia.database import keys

    verifier = app.state.sophia.keys
    async with client_from(app, "192.0.2.20") as host:
        with pytest.MonkeyPatch.context() as brief:
            brief.setattr(verifier, "miss_ttl_s", 0.05)
            for n in range(settings.auth_failure_limit + 1):
                await host.get("/api/v1/records", headers=bearer(f"sk_{n:08x}_{'F' * 43}"))
            async with database.connection() as connection:
                _, late = await keys.create(connection, "gate-late", "read")
            await asyncio.sleep(0.06)
            answer = await host.get("/api/v1/records", headers=bearer(late))
    assert answer.status_code == 200, answer.text
