"""What the upstream tests share: the test servers' script, callers of each scope, upstreams made
as the loader makes them, and checks on processes and metrics."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import yaml

from sophia.mcp_gateway.config import UpstreamConfig, parse
from sophia.mcp_gateway.providers import Caller

SERVER_SCRIPT = Path(__file__).with_name("upstream_servers.py")
"""Run with this interpreter, it serves the test server over stdio."""
ADMIN = Caller("admin-key", "adm", "admin")
WRITER = Caller("write-key", "wri", "write")
READER = Caller("read-key", "rea", "read")


def configured(name: str, **fields: Any) -> UpstreamConfig:
    """One upstream as the loader makes it from a file."""
    return parse(yaml.safe_dump({"upstreams": [{"name": name, **fields}]}), "test.yaml").upstreams[0]


def stdio(name: str, **fields: Any) -> UpstreamConfig:
    return configured(name, command=sys.executable, args=[str(SERVER_SCRIPT)], **fields)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped (dead; reaping is its parent's)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text
