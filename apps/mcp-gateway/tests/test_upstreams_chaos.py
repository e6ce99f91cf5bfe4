"""Stdio upstreams started and ended a hundred times, every way one can end, leave nothing behind:
no child of the test process, no zombie, no process group, nothing they started."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from metrics import sample
from upstream_helpers import ADMIN, SERVER_SCRIPT, alive, group_gone, text
from waiting import eventually

from sophia.mcp_gateway.config import GatewayConfig, parse
from sophia.mcp_gateway.providers import ToolUnavailable
from sophia.mcp_gateway.upstreams import Upstreams

pytestmark = pytest.mark.chaos

UPSTREAMS = 4
ROUNDS = 25
"""Each round starts the command once: 4 x 25 = 100 restarts."""


def children(pid: int) -> dict[int, str]:
    """The direct children of `pid` and their state (`Z`: a zombie nobody reaped)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found[int(entry.name)] = fields[0]
    return found


@pytest.mark.timeout(600)
async def test_a_hundred_restarts_leave_no_process_behind() -> None:
    names = [f"chaos{index}" for index in range(UPSTREAMS)]
    entries = [
        {"name": name, "command": sys.executable, "args": [str(SERVER_SCRIPT)], "idle_s": 0.2}
        for name in names
    ]
    initial = parse(yaml.safe_dump({"upstreams": entries}), "chaos.yaml")
    children_before = children(os.getpid())
    processes_before = sample("sophia_mcp_upstream_processes")
    opened_before = sum(sample("sophia_mcp_upstream_sessions_opened_total", upstream=name) for name in names)
    leaders: set[int] = set()
    sleepers: set[int] = set()

    async with Upstreams(initial) as upstreams:

        def replace(name: str, round_number: int) -> GatewayConfig:
            changed = [
                dataclasses.replace(upstream, timeout_s=30 + round_number)
                if upstream.name == name
                else upstream
                for upstream in upstreams.config.upstreams
            ]
            return dataclasses.replace(upstreams.config, upstreams=tuple(changed))

        async def churn(name: str) -> None:
            for round_number in range(ROUNDS):
                upstream = upstreams.get(name)
                assert upstream is not None
                await upstream.call_tool(f"{name}__echo", {"text": "up"}, ADMIN)
                leader = upstream.pid
                assert leader is not None
                leaders.add(leader)
                if round_number % 3 == 0:
                    sleeper = await upstream.call_tool(f"{name}__spawn_sleeper", {}, ADMIN)
                    sleepers.add(int(text(sleeper)))
                match round_number % 4:
                    case 0:  # dies in the middle of a call
                        with pytest.raises(ToolUnavailable):
                            await upstream.call_tool(f"{name}__crash", {}, ADMIN)
                    case 1:  # killed from outside
                        os.kill(leader, signal.SIGKILL)
                    case 2:  # left idle
                        pass
                    case 3:  # its configuration changed: replaced, the old one closed
                        await upstreams.apply(replace(name, round_number))
                await eventually(lambda upstream=upstream: upstream.pid is None, timeout_s=30)

        await asyncio.gather(*(churn(name) for name in names))

    opened = sum(sample("sophia_mcp_upstream_sessions_opened_total", upstream=name) for name in names)
    assert opened - opened_before == UPSTREAMS * ROUNDS
    assert len(leaders) == UPSTREAMS * ROUNDS
    left = {pid: state for pid, state in children(os.getpid()).items() if pid not in children_before}
    assert left == {}, "upstream processes outlived their sessions"
    assert [pid for pid, state in children(os.getpid()).items() if state == "Z"] == []
    assert [pid for pid in leaders if not group_gone(pid)] == []
    await eventually(lambda: all(not alive(pid) for pid in sleepers), timeout_s=10)
    assert sample("sophia_mcp_upstream_processes") == processes_before
