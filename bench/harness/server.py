"""The API as a child process, started the way production starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx

from harness.database import DEFAULT_SERVER, DEFAULT_WORKERS, HOST, Environment
from sophia.engines.process import free_port


class ApiServer:
    """`python -m sophia.api.server` as a child: ready when /readyz says 200, stopped with SIGTERM.

    `command` starts something else in its place (a baseline app served the same way), with the
    same environment: the engines' URLs and `SOPHIA_API_SERVER/WORKERS/HOST/PORT`.
    """

    ready_path = "/readyz"
    """Answers 200 once the child serves."""
    what = "the API"
    """How messages name the child."""

    def __init__(
        self,
        env: Environment,
        *,
        server: str = DEFAULT_SERVER,
        workers: int = DEFAULT_WORKERS,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        extra_env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.env = env
        self.command = command or [sys.executable, "-m", "sophia.api.server"]
        self.extra_env = extra_env or {}
        self.server = server
        self.workers = workers
        self.port = free_port(HOST)
        self.base_url = f"http://{HOST}:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        name = "api" if command is None else Path(self.command[-1]).stem
        self.log_path = env.work_dir / f"{name}-{server}-{workers}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        child_env = {
            **os.environ,
            **self.env.server_env(),
            "SOPHIA_API_SERVER": self.server,
            "SOPHIA_API_WORKERS": str(self.workers),
            "SOPHIA_API_HOST": HOST,
            "SOPHIA_API_PORT": str(self.port),
            **self.extra_env,
        }
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,  # its own process group: its workers are stopped with it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"{self.what} exited with {self._process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(self.ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.what} was not ready within {self.ready_timeout_s}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (its group's leader)."""
        return self._process.pid if self._process is not None else None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(self.stop_timeout_s)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is still there
        process.wait(self.stop_timeout_s)
        self._process = None

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
