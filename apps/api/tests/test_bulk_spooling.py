"""A bulk upload holds no database connection while its client sends, and a body that stops is a 408."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from app_clients import app_client
from metrics import sample
from problem_assertions import assert_problem
from waiting import eventually

NDJSON = {"Content-Type": "application/x-ndjson"}


def spooling() -> float:
    """Bulk bodies being spooled in this process (every app of the tests counts together)."""
    return sample("sophia_bulk_spooling_uploads")


def line(source_system: str, number: int) -> bytes:
    record = {
        "source_system": source_system,
        "kind": "deal",
        "external_id": f"r-{number}",
        "data": {"n": number},
    }
    return orjson.dumps(record) + b"\n"


class Stalling:
    """A body that sends one line, then nothing until released."""

    def __init__(self, source_system: str) -> None:
        self.source_system = source_system
        self.release = asyncio.Event()

    async def __aiter__(self):
        yield line(self.source_system, 1)
        await self.release.wait()
        yield line(self.source_system, 2)


async def test_stalled_uploads_hold_no_connection_and_others_are_served_meanwhile(settings, api_keys):
    """16 uploads stall with a pool of 2 connections: every list and write of others still answers."""
    tight = settings.model_copy(update={"db_pool_max_size": 2, "db_acquire_timeout_s": 0.5})
    source = f"spool{uuid.uuid4().hex[:8]}"
    async with app_client(tight, api_keys["admin"]) as client:
        stalled = [Stalling(f"{source}s{n}") for n in range(16)]
        uploads = [
            asyncio.create_task(client.post("/api/v1/records:bulk", content=body, headers=NDJSON))
            for body in stalled
        ]
        await eventually(lambda: spooling() >= 16)  # every upload has sent its first line and waits
        others = [await client.get("/api/v1/records", params={"limit": 1}) for _ in range(5)]
        others += [
            await client.put(f"/api/v1/records/{source}/deal/x{n}", json={"data": {}}) for n in range(5)
        ]
        assert [answer.status_code for answer in others] == [200] * 5 + [201] * 5
        for body in stalled:
            body.release.set()
        answers = await asyncio.gather(*uploads)
    assert [answer.json()["received"] for answer in answers] == [2] * 16


async def test_a_body_that_stops_arriving_is_a_408_and_nothing_is_written(settings, api_keys):
    impatient = settings.model_copy(update={"body_idle_timeout_s": 0.1})  # the first line comes at once
    source = f"idle{uuid.uuid4().hex[:8]}"
    async with app_client(impatient, api_keys["admin"]) as client:
        body = Stalling(source)
        response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
        problem = assert_problem(response, 408)
        assert "No part of the body arrived for 0.1 s. Nothing was written." in problem["detail"]
        listed = await client.get("/api/v1/records", params={"source_system": source})
    assert listed.json()["items"] == []


async def test_a_body_past_the_memory_spool_goes_to_a_file_and_is_written_whole(settings, api_keys):
    small = settings.model_copy(update={"bulk_spool_memory_bytes": 1024})
    source = f"disk{uuid.uuid4().hex[:8]}"
    body = b"".join(line(source, number) for number in range(1, 501))
    async with app_client(small, api_keys["admin"]) as client:
        response = await client.post("/api/v1/records:bulk", content=body, headers=NDJSON)
        assert response.json() == {"received": 500, "created": 500, "updated": 0}
        listed = await client.get("/api/v1/records", params={"source_system": source, "limit": 500})
    assert sorted(item["data"]["n"] for item in listed.json()["items"]) == list(range(1, 501))


async def test_past_the_most_uploads_at_once_one_more_is_a_503_and_the_others_finish(settings, api_keys):
    few = settings.model_copy(update={"bulk_max_uploads": 3})
    source = f"most{uuid.uuid4().hex[:8]}"
    async with app_client(few, api_keys["admin"]) as client:
        stalled = [Stalling(f"{source}s{n}") for n in range(3)]
        uploads = [
            asyncio.create_task(client.post("/api/v1/records:bulk", content=body, headers=NDJSON))
            for body in stalled
        ]
        await eventually(lambda: spooling() >= 3)  # the three hold every place
        refused = await client.post("/api/v1/records:bulk", content=line(source, 9), headers=NDJSON)
        problem = assert_problem(refused, 503)
        assert "3 bulk uploads are in progress" in problem["detail"]
        assert refused.headers["retry-after"] == "1"
        for body in stalled:
            body.release.set()
        answers = await asyncio.gather(*uploads)
        assert [answer.json()["received"] for answer in answers] == [2] * 3
        # the places are given back: the next upload goes through
        again = await client.post("/api/v1/records:bulk", content=line(source, 9), headers=NDJSON)
        assert again.json() == {"received": 1, "created": 1, "updated": 0}
