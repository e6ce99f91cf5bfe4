"""`sophia up`: engines, migrations, demo data, a dev key and the API, in the foreground until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel

from sophia.cli import endpoints
from sophia.cli.seed import seed
from sophia.core.errors import SophiaError, Unavailable
from sophia.database import Database, keys
from sophia.database.migrations import migrate
from sophia.engines import Engines, EngineUrls
from sophia.engines.process import SupervisedProcess, free_port
from sophia.events.connection import NatsConnection
from sophia.shared.files import write_private
from sophia.shared.resilience import retry
from sophia.shared.settings import Settings
from sophia.workers.streams import check_streams

console = Console()
LOCK_FILE = "stack.lock"


class StackRunning(SophiaError):
    """Another `sophia up` holds this data directory: two stacks on one set of engine files would
    break both."""


@contextlib.contextmanager
def holding(data_dir: Path) -> Iterator[None]:
    """This data directory's lock for as long as the stack runs (the kernel lets go of it when the
    process ends, however it ends); `StackRunning` naming the holder if another stack has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the stack's life)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise StackRunning(
                f"a stack is already running on {data_dir} (pid {holder}); stop it, or give "
                "SOPHIA_DATA_DIR another directory"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield
    finally:
        lock.close()


DEV_KEY_FILE = "dev-api-key"


def api_port(settings: Settings) -> int:
    """`SOPHIA_API_PORT` when nothing listens on it, else (or when it is 0) a free port."""
    return _port_or_free(settings.api_host, settings.api_port)


def _port_or_free(host: str, port: int) -> int:
    if not port or not _port_free(host, port):
        port = free_port(host)
    return port


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) != 0


async def prepare_database(settings: Settings, seed_records: int) -> str:
    """Migrate, seed an empty catalog, and return the dev API key (reused across runs)."""
    async with Database(settings) as database:
        async with database.connection() as connection:
            await migrate(connection)
            empty = await connection.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM sophia_core.unified_data_catalog)"
            )
        if empty and seed_records:
            result = await seed(database, seed_records, 42, settings.max_line_bytes)
            console.print(f"Loaded {result.received} demo records.")
        key_file = Path(settings.data_dir) / DEV_KEY_FILE
        async with database.connection() as connection:
            if key_file.exists() and await keys.find_active(connection, key_file.read_text().strip()):
                return key_file.read_text().strip()
            _, secret = await keys.create(connection, "dev (sophia up)", "admin")
        write_private(key_file, secret)
        return secret


async def _api_ready(base_url: str) -> bool:
    return await _answers(f"{base_url}/readyz")


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def run_up(settings: Settings, seed_records: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data_dir = Path(settings.data_dir).resolve()
    with holding(data_dir):
        await _run_up(settings, seed_records, stop, data_dir)


async def _run_up(settings: Settings, seed_records: int, stop: asyncio.Event, data_dir: Path) -> None:
    console.print(f"Starting engines under {data_dir} ...")
    async with Engines(settings) as urls:
        settings = settings.model_copy(update=_url_update(urls))
        dev_key = await retry(
            lambda: prepare_database(settings, seed_records),
            attempts=5,
            base_s=0.5,
            retry_on=(Unavailable,),
            name="prepare",
        )
        async with NatsConnection(urls.nats_url, settings.engine_timeout_s) as nats:
            await check_streams(settings, nats)  # a limit NATS cannot hold stops here, named
        port = api_port(settings)
        base_url = f"http://{settings.api_host}:{port}"
        workers_port = free_port(settings.api_host)
        workers_metrics = f"http://{settings.api_host}:{workers_port}/metrics"
        realtime_port = _port_or_free(settings.realtime_host, settings.realtime_port)
        realtime_url = f"http://{settings.realtime_host}:{realtime_port}"
        mcp_port = _port_or_free(settings.mcp_host, settings.mcp_port)
        mcp_url = f"http://{settings.mcp_host}:{mcp_port}"
        env = {key.upper(): str(value) for key, value in _server_env(settings, urls, port).items()}
        env |= {  # every process knows where the others are (the dashboard's ops view reads them)
            "SOPHIA_REALTIME_PORT": str(realtime_port),
            "SOPHIA_REALTIME_HOST": settings.realtime_host,
            "SOPHIA_WEB_WORKERS_METRICS_URL": workers_metrics,
            "SOPHIA_WEB_REALTIME_METRICS_URL": f"{realtime_url}/metrics",
            "SOPHIA_MCP_PORT": str(mcp_port),
            "SOPHIA_MCP_HOST": settings.mcp_host,
        }
        api = SupervisedProcess(
            "api",
            [sys.executable, "-m", "sophia.api.server"],
            lambda: _api_ready(base_url),
            data_dir / "logs" / "api.log",
            env=env,
        )
        workers = SupervisedProcess(
            "workers",
            [sys.executable, "-m", "sophia.workers"],
            lambda: _answers(workers_metrics),
            data_dir / "logs" / "workers.log",
            env={**env, "SOPHIA_WORKERS_METRICS_PORT": str(workers_port)},
        )
        realtime = SupervisedProcess(
            "realtime",
            [sys.executable, "-m", "sophia.realtime"],
            lambda: _answers(f"{realtime_url}/healthz"),
            data_dir / "logs" / "realtime.log",
            env=env,
        )
        gateway = SupervisedProcess(
            "mcp-gateway",
            [sys.executable, "-m", "sophia.mcp_gateway"],
            lambda: _answers(f"{mcp_url}/healthz"),
            data_dir / "logs" / "mcp-gateway.log",
            env=env,
        )
        await api.start()
        try:
            await workers.start()
            await realtime.start()
            await gateway.start()
            details = {
                **_endpoints(base_url, urls, dev_key, data_dir),
                "workers_metrics": workers_metrics,
                "realtime": f"ws://{settings.realtime_host}:{realtime_port}/ws",
                "realtime_metrics": f"{realtime_url}/metrics",
                "mcp": f"{mcp_url}/mcp",
            }
            written = endpoints.write(settings, details)
            _announce(base_url, dev_key, written, details["realtime"], details["mcp"])
            await stop.wait()
            console.print("Stopping ...")
        finally:
            await gateway.stop(settings.shutdown_grace_s + 5)
            await realtime.stop(settings.shutdown_grace_s + 5)
            await workers.stop(settings.shutdown_grace_s + 5)
            await api.stop(settings.shutdown_grace_s + 5)
            endpoints.path(settings).unlink(missing_ok=True)
    console.print("Stopped: API, workers, real-time service, MCP gateway and engines are down.")


def _url_update(urls: EngineUrls) -> dict[str, str]:
    return {
        "database_url": urls.database_url,
        "redis_url": urls.redis_url,
        "nats_url": urls.nats_url,
    }


def _server_env(settings: Settings, urls: EngineUrls, port: int) -> dict[str, object]:
    return {
        **urls.as_env(),
        "SOPHIA_API_PORT": port,
        "SOPHIA_API_HOST": settings.api_host,
        "SOPHIA_DATA_DIR": Path(settings.data_dir).resolve(),
    }


def _endpoints(base_url: str, urls: EngineUrls, dev_key: str, data_dir: Path) -> dict[str, object]:
    return {
        "api": base_url,
        "dashboard": f"{base_url}/",
        "docs": f"{base_url}/docs",
        "redoc": f"{base_url}/redoc",
        "openapi": f"{base_url}/openapi.json",
        "metrics": f"{base_url}/metrics",
        "healthz": f"{base_url}/healthz",
        "readyz": f"{base_url}/readyz",
        "database_url": urls.database_url,
        "redis_url": urls.redis_url,
        "nats_url": urls.nats_url,
        "api_key": dev_key,
        "data_dir": str(data_dir),
    }


def _announce(base_url: str, dev_key: str, written: Path, realtime: object, mcp: object) -> None:
    body = "\n".join(
        [
            f"Dashboard {base_url}/   (sign in with the dev key)",
            f"API       {base_url}/api/v1",
            f"Live      {realtime}   (WebSocket, same key)",
            f"MCP       {mcp}   (AI agents, same key)",
            f"Docs      {base_url}/docs   (ReDoc: {base_url}/redoc)",
            f"Metrics   {base_url}/metrics",
            f"Ready     {base_url}/readyz",
            f"Dev key   {dev_key}",
            "",
            f"Machine-readable: {written}",
            'Shell: eval "$(.venv/bin/sophia env)"    Ctrl-C stops everything.',
        ]
    )
    console.print(Panel(body, title="Sophia is up", expand=False))
