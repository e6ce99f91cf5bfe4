"""A real API server for tests: `python -m sophia.api.server` in a subprocess on a free port.

Its output goes to a log file that is printed when the test using it fails; teardown stops the whole
process group, workers included, so nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx

from sophia.engines.process import free_port
from sophia.shared.settings import Settings

HOST = "127.0.0.1"


class LiveServer:
    """One server process: its URL, its log, and ways to signal it and wait for it to end."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://{HOST}:{port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM to the server's main process, as an orchestrator stopping it would send."""
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit status (negative: killed by that signal); `TimeoutError` if still running."""
        async with asyncio.timeout(timeout_s):
            while self.process.poll() is None:
                await asyncio.sleep(0.05)
        return self.process.returncode

    async def wait_ready(self, timeout_s: float) -> None:
        """Until `/readyz` answers 200; `RuntimeError` if the process dies first."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode} before it was ready")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after {timeout_s}s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Kill the process group if anything of it is still running."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def server_environment(
    settings: Settings, server: str, port: int, grace_s: float, workers: int = 1
) -> dict[str, str]:
    """The SOPHIA_* variables of a server on the test session's engines."""
    return {
        **os.environ,
        "SOPHIA_DATABASE_URL": settings.database_url or "",
        "SOPHIA_REDIS_URL": settings.redis_url or "",
        "SOPHIA_NATS_URL": settings.nats_url or "",
        "SOPHIA_DATA_DIR": str(settings.data_dir),
        "SOPHIA_CACHE_KEY_PREFIX": settings.cache_key_prefix,
        "SOPHIA_API_HOST": HOST,
        "SOPHIA_API_PORT": str(port),
        "SOPHIA_API_WORKERS": str(workers),
        "SOPHIA_API_SERVER": server,
        "SOPHIA_SHUTDOWN_GRACE_S": str(grace_s),
        "SOPHIA_LOG_JSON": "false",
        "SOPHIA_LOG_LEVEL": "INFO",
    }


@asynccontextmanager
async def live_server(
    settings: Settings,
    server: str,
    log_dir: Path,
    *,
    grace_s: float,
    ready_timeout_s: float = 60.0,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[LiveServer]:
    """A ready server (`extra_env` on top of the session's settings); its log is printed if the
    body fails, and it is killed on the way out."""
    port = free_port(HOST)
    log_path = log_dir / f"{server}-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sophia.api.server"],
            env=server_environment(settings, server, port, grace_s, workers) | (extra_env or {}),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    live = LiveServer(process, port, log_path)
    try:
        await live.wait_ready(ready_timeout_s)
        yield live
    except BaseException:
        print(f"--- {server} log ({log_path}) ---\n{live.logs()}")
        raise
    finally:
        live.stop()
