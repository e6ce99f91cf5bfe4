"""`sophia up` end to end: its own embedded engines, demo data, the README's examples, Ctrl-C."""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import httpx2
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from websockets.sync.client import connect

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_try_it_blocks() -> list[str]:
    """The bash blocks of the README's "Try it" section that should succeed: loading the stack's
    address and key into the shell, then the curl calls."""
    section = README.read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [block for block in blocks if "--fail-with-body" in block or block.startswith("eval ")]


def fresh_shell_path() -> str:
    """A PATH as a fresh shell on a machine with only Python and make has it: no uv, no .venv."""
    path = "/usr/local/bin:/usr/bin:/bin"
    assert shutil.which("uv", path=path) is None, "this machine has uv in a system folder"
    return path


def processes_of(data_dir: Path) -> list[int]:
    """Pids of live processes started for the stack in `data_dir` (found by their environment)."""
    marker = f"SOPHIA_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (
                marker in (entry / "environ").read_bytes().split(b"\0")
                and (entry / "stat").read_text().split()[2] != "Z"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


async def mcp_tools(url: str, secret: str) -> list[str]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as agent:
        return [tool.name for tool in (await agent.list_tools()).tools]


@pytest.mark.e2e
def test_up_serves_the_readme_examples_and_ctrl_c_stops_everything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env |= {"SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_API_PORT": "0", "SOPHIA_SEED_RECORDS": "300"}
    log = (tmp_path / "up.log").open("wb")
    # Its own process group, signalled as a whole: what a terminal's Ctrl-C does.
    up = subprocess.Popen(
        [sys.executable, "-m", "sophia.cli.main", "up"],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    endpoints_file = tmp_path / "endpoints.json"
    try:
        wait_until(endpoints_file.exists, 120, "endpoints.json was not written")
        endpoints = orjson.loads(endpoints_file.read_bytes())
        assert httpx.get(endpoints["readyz"], timeout=5).status_code == 200
        headers = {"Authorization": f"Bearer {endpoints['api_key']}"}
        seeded = httpx.get(f"{endpoints['api']}/api/v1/records?limit=1", headers=headers, timeout=5).json()
        assert len(seeded["items"]) == 1
        # a write through the API reaches a live subscriber: outbox, relay, JetStream, real-time
        with connect(endpoints["realtime"], additional_headers=headers, open_timeout=10) as live:
            live.send('{"op": "subscribe", "id": 1, "channel": "records:livecheck"}')
            assert orjson.loads(live.recv(timeout=10))["type"] == "subscribed"
            written = httpx.put(
                f"{endpoints['api']}/api/v1/records/livecheck/deal/live-1",
                json={"data": {"stage": "won"}},
                headers=headers,
                timeout=5,
            )
            assert written.status_code == 201
            published = orjson.loads(live.recv(timeout=30))
        assert published["type"] == "publication"
        assert published["event"]["payload"]["external_id"] == "live-1"

        # the dashboard: sign in with the dev key, as the panel says, and the business view opens
        with httpx.Client(base_url=endpoints["api"], timeout=10) as browser:
            assert browser.get(endpoints["dashboard"]).status_code == 303  # to /sign-in
            signed = browser.post("/sign-in", data={"key": endpoints["api_key"]})
            assert signed.status_code == 303
            business = browser.get("/")
            assert business.status_code == 200
            assert 'id="tile-open-deals"' in business.text
            assert browser.get("/ops").status_code == 200  # the dev key is an admin key

        # an AI agent: the official SDK's client, with the dev key, finds Sophia's tools
        assert "search_records" in asyncio.run(mcp_tools(endpoints["mcp"], endpoints["api_key"]))

        exports = subprocess.run(
            [sys.executable, "-m", "sophia.cli.main", "env"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"SOPHIA_API={endpoints['api']}" in exports
        # As a newcomer runs them: in the repository, in a fresh shell that has no uv on its PATH.
        shell_env = {**env, "PATH": fresh_shell_path()}
        script = "\n".join(readme_try_it_blocks())
        assert script.startswith('eval "$(.venv/bin/sophia env)"')
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=shell_env,
            cwd=README.parent,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"README block failed:\n{script}\n{result.stdout}\n{result.stderr}"

        ports = [
            urlparse(endpoints["api"]).port,
            urlparse(endpoints["realtime"]).port,
            urlparse(endpoints["mcp"]).port,
            urlparse(endpoints["database_url"]).port,
            urlparse(endpoints["redis_url"]).port,
            urlparse(endpoints["nats_url"]).port,
        ]
        assert all(listening(port) for port in ports)
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
        assert not any(listening(port) for port in ports)
        assert not endpoints_file.exists()
        assert "engine_died" not in (tmp_path / "up.log").read_text()  # stopped in order, not restarted
        wait_until(lambda: not processes_of(tmp_path), 30, "a process outlived Ctrl-C")
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
        if up.returncode not in (0, None):
            print((tmp_path / "up.log").read_text())


@pytest.mark.e2e
def test_serve_runs_the_api_alone_against_configured_engines_and_stops_on_sigterm(settings, tmp_path):
    from sophia.engines.process import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env |= {
        "SOPHIA_DATABASE_URL": settings.database_url,
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_API_PORT": str(port),
        "SOPHIA_API_WORKERS": "1",
        "SOPHIA_DATA_DIR": str(tmp_path),
    }
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "sophia.cli.main", "serve"], env=env, stdout=log, stderr=log
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "sophia serve did not become ready")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        assert not listening(port)
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()


@pytest.mark.e2e
def test_kill_9_of_up_leaves_no_engine_or_api_worker_listening(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    env |= {"SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_API_PORT": "0", "SOPHIA_SEED_RECORDS": "0"}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "sophia.cli.main", "up"], env=env, stdout=log, stderr=log
        )
    try:
        endpoints_file = tmp_path / "endpoints.json"
        wait_until(endpoints_file.exists, 120, "endpoints.json was not written")
        endpoints = orjson.loads(endpoints_file.read_bytes())
        ports = [urlparse(endpoints[name]).port for name in ("api", "database_url", "redis_url", "nats_url")]
        up.kill()
        up.wait(timeout=10)
        wait_until(lambda: not any(listening(port) for port in ports), 30, "something outlived kill -9")
        wait_until(lambda: not processes_of(tmp_path), 30, "an engine or API worker outlived kill -9")
    finally:
        if up.poll() is None:
            up.kill()


def test_the_api_keeps_its_configured_port_while_it_is_free_and_takes_another_when_not(settings):
    from sophia.cli.up import api_port
    from sophia.engines.process import free_port

    local = settings.model_copy(update={"api_host": "127.0.0.1"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        moved = api_port(local.model_copy(update={"api_port": busy}))
    assert moved not in (0, busy)
    free = free_port()
    assert api_port(local.model_copy(update={"api_port": free})) == free
    assert api_port(local.model_copy(update={"api_port": 0})) > 0


async def test_up_keeps_its_dev_key_across_runs_and_replaces_one_that_was_revoked(
    settings, database, tmp_path
):
    from sophia.cli.up import DEV_KEY_FILE, prepare_database
    from sophia.database import keys

    local = settings.model_copy(update={"data_dir": tmp_path})
    first = await prepare_database(local, 0)
    assert await prepare_database(local, 0) == first
    async with database.connection() as connection:
        assert await keys.revoke(connection, first.split("_")[1])
    replaced = await prepare_database(local, 0)
    assert replaced != first
    assert (tmp_path / DEV_KEY_FILE).read_text() == replaced
    async with database.connection() as connection:
        assert (await keys.find_active(connection, replaced)).scope == "admin"
