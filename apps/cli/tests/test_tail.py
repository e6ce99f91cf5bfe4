"""`sophia tail`: a channel's events as they come, and after a dropped connection, the rest of
them once and in order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import orjson
import pytest
from record_events import publish, record_event
from typer.testing import CliRunner
from waiting import eventually

from sophia.cli.main import app
from sophia.cli.tail import tail
from sophia.engines.process import free_port
from sophia.realtime.service import RealtimeService


async def test_a_tail_that_loses_its_service_resumes_from_its_last_event_with_nothing_missed_or_twice(
    own_streams, api_keys
):
    settings = own_streams.model_copy(update={"realtime_port": free_port("127.0.0.1")})
    url = f"ws://127.0.0.1:{settings.realtime_port}/ws"
    seen: list[dict[str, Any]] = []
    stop = asyncio.Event()
    service = await RealtimeService(settings).__aenter__()
    try:
        tailing = asyncio.create_task(
            tail(
                url,
                api_keys["read"],
                "records:tailed",
                None,
                seen.append,
                stop=stop,
                max_events=6,
                reconnect_max_s=0.2,
            )
        )
        await eventually(lambda: service.hub.listened("records:tailed"))
        await publish(settings, [record_event("tailed", "deal", n) for n in range(2)])
        await eventually(lambda: len(seen) >= 2)
    finally:
        await service.__aexit__(None, None, None)  # the tail's connection drops (1012)
    await publish(settings, [record_event("tailed", "deal", n) for n in range(2, 4)])  # while it is away
    async with RealtimeService(settings):  # back, on the same port
        await publish(settings, [record_event("tailed", "deal", n) for n in range(4, 6)])
        last = await asyncio.wait_for(tailing, 30)
    assert [frame["event"]["payload"]["n"] for frame in seen] == [0, 1, 2, 3, 4, 5]
    assert last == seen[-1]["position"]


def run_tail(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sophia.cli.main", "tail", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e  # a process of its own: the fast tier keeps the in-process tests
async def test_the_command_prints_json_lines_and_a_bad_key_exits_2_saying_so(own_streams, api_keys):
    settings = own_streams.model_copy(update={"realtime_port": 0})
    async with RealtimeService(settings) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        command = asyncio.create_task(
            asyncio.to_thread(
                run_tail,
                "records:clitail",
                "--url",
                url,
                "--key",
                api_keys["read"],
                "--json",
                "--max-events",
                "2",
            )
        )
        await eventually(lambda: service.hub.listened("records:clitail"), timeout_s=30)
        await publish(settings, [record_event("clitail", "deal", n) for n in range(2)])
        done = await command
        refused = await asyncio.to_thread(
            run_tail, "records", "--url", url, "--key", "sk_0123abcd_" + "Q" * 43
        )
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line["event"]["payload"]["n"] for line in lines] == [0, 1]
    assert "last position:" in done.stderr
    assert refused.returncode == 2
    assert "refused the key (401)" in refused.stderr


def test_since_must_be_epoch_and_sequence():
    completed = CliRunner().invoke(
        app, ["tail", "records", "--since", "nonsense", "--url", "ws://127.0.0.1:9/ws", "--key", "k"]
    )
    assert completed.exit_code == 2
    assert "--since is EPOCH:SEQ" in completed.output


@pytest.mark.e2e  # a process of its own: the fast tier keeps the in-process tests
@pytest.mark.parametrize("channel", ["system-events"])
async def test_a_channel_the_key_may_not_read_exits_2_naming_why(own_streams, api_keys, channel):
    settings = own_streams.model_copy(update={"realtime_port": 0})
    async with RealtimeService(settings) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        refused = await asyncio.to_thread(run_tail, channel, "--url", url, "--key", api_keys["read"])
    assert refused.returncode == 2
    assert "forbidden" in refused.stderr
