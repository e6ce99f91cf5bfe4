"""The child processes of bench/ws_servers.py: a broadcast server and the load generator.

Each runs in its own process group and is killed with it on the way out; every wait has a
deadline. The server's memory is the RSS of its whole group (granian's supervisor and worker).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

WS_DIR = Path(__file__).resolve().parent
STOP_TIMEOUT_S = 10.0


def server_command(name: str, host: str, port: int, connections: int) -> list[str]:
    """How each candidate is started: one process (one granian worker), uvloop everywhere."""
    if name == "granian":
        return [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1"),
            *("--loop", "uvloop", "--host", host, "--port", str(port)),
            *("--backlog", "2048", "--backpressure", str(connections + 1024)),  # a socket is a "request"
            *("--log-level", "warning", "--working-dir", str(WS_DIR), "granian_app:app"),
        ]
    return [sys.executable, str(WS_DIR / f"{name}_server.py"), "--host", host, "--port", str(port)]


class Child:
    """A child process in its own group, with its output in `log_path` or on a pipe."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, piped: bool = False) -> None:
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else log_file,
                stderr=log_file,
                env={**os.environ, "PYTHONPATH": str(WS_DIR)},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is still there
        process.wait(STOP_TIMEOUT_S)
        self.process = None


class Server(Child):
    """A broadcast server, ready once its port accepts connections."""

    def __init__(self, name: str, host: str, port: int, connections: int, log_dir: Path) -> None:
        super().__init__(server_command(name, host, port, connections), log_dir / f"{name}-{port}.log")
        self.name = name
        self.host = host
        self.port = port

    def __enter__(self) -> Server:
        self.start()
        try:
            self._wait_listening(timeout_s=30)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_running(self.name)
            with suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not listen within {timeout_s}s:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """The resident memory of every process in the server's group."""
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != self.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


class Generator(Child):
    """bench/ws/generator.py, spoken to in JSON lines (its docstring lists the commands)."""

    def __init__(self, url: str, client: str, log_dir: Path) -> None:
        command = [sys.executable, str(WS_DIR / "generator.py"), "--url", url, "--client", client]
        super().__init__(command, log_dir / "generator.log")
        self.answers: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def __enter__(self) -> Generator:
        self.start(piped=True)
        assert self.process is not None
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with suppress(OSError, TimeoutError, RuntimeError):
            if self.process is not None and self.process.poll() is None:
                self.send({"op": "close"})
                self.expect("closed", timeout_s=60)
        self.stop()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            with suppress(ValueError):
                self.answers.put(json.loads(line))
        self.answers.put(None)  # the generator ended

    def send(self, request: dict[str, Any]) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The generator's next answer, which must be `event`, within `timeout_s`."""
        try:
            answer = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no {event!r} from the generator within {timeout_s:g}s") from None
        if answer is None or answer.get("event") != event:
            raise RuntimeError(f"the generator answered {answer} instead of {event!r}:\n{self.log_tail()}")
        return answer
