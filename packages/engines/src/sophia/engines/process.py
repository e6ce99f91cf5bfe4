"""A child process that is started, checked for readiness, restarted when it dies, and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sophia.shared.logging import get_logger
from sophia.shared.process import die_with_parent
from sophia.shared.resilience import backoff_delays

log = get_logger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different TCP ports nothing listens on right now (all bound at once, so the system
    cannot hand the same one back twice, as separate `free_port` calls may)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child, before exec
    """In the child: SIGKILL when the parent dies, so nothing outlives a crashed `sophia up`
    (test_engines_die_with_a_parent_killed_by_sigkill shows it)."""
    die_with_parent(signal.SIGKILL)


class SupervisedProcess:
    """One engine binary: `start` waits for `ready`, a watcher restarts it with backoff."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], Awaitable[bool]],
        log_path: Path,
        *,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        start_timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.ready = ready
        self.log_path = log_path
        self.user = user
        self.stop_signal = stop_signal
        self.start_timeout_s = start_timeout_s
        self.env = env
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name=f"watch-{self.name}")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent,
                # Its own session: a terminal's Ctrl-C reaches only `sophia up`, which stops the
                # API first and the engines after it, instead of every engine at once.
                start_new_session=True,
                user=self.user,
                env={**os.environ, **(self.env or {})},
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not await self.ready():
            if self._process.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self._process.kill()  # a hung start is not left running unsupervised
                await self._process.wait()
                raise TimeoutError(
                    f"{self.name} not ready after {self.start_timeout_s:.0f}s; see {self.log_path}"
                )
            await asyncio.sleep(0.05)
        log.info("engine_ready", engine=self.name, pid=self._process.pid)

    async def _watch(self) -> None:
        delays = iter(backoff_delays(64, base_s=0.5, max_s=10.0))
        while True:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            delay = next(delays, 10.0)
            self.restarts += 1
            log.error("engine_died", engine=self.name, code=code, restart_in_s=round(delay, 2))
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except Exception as error:  # the watcher must outlive any failed restart
                log.error("engine_restart_failed", engine=self.name, error=repr(error))

    def kill(self) -> None:
        """SIGKILL the process (chaos tests); the watcher brings it back."""
        if self._process and self._process.returncode is None:
            self._process.kill()

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        process = self._process
        if process and process.returncode is None:
            process.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                log.warning("engine_kill", engine=self.name)
                process.kill()
                await process.wait()
        if self._watcher:
            self._watcher.cancel()
        log.info("engine_stopped", engine=self.name)


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def follow_lines(
    path: Path, on_line: Callable[[str], None], *, offset: int, poll_s: float = 0.25
) -> None:
    """Call `on_line` with every line written to `path` past `offset`; runs until cancelled.

    The engine writes its log file itself, so it never waits for this reader (a pipe would)."""
    pending = b""
    while True:
        await asyncio.sleep(poll_s)
        try:
            with path.open("rb") as file:
                if os.fstat(file.fileno()).st_size < offset:
                    offset = 0  # truncated or replaced: read the new file from its start
                file.seek(offset)
                chunk = file.read()
        except FileNotFoundError:
            continue
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace"))


async def tcp_answers(host: str, port: int, send: bytes, expect: bytes, timeout_s: float = 1.0) -> bool:
    """True if a TCP peer answers `send` with something starting with `expect`."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                if send:
                    writer.write(send)
                    await writer.drain()
                return (await reader.readline()).startswith(expect)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False


def unprivileged_user(name: str = "sophia") -> str | None:
    """PostgreSQL refuses to run as root: under root, run it as `name` (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    return name


def chown_tree(path: Path, user: str) -> None:
    """Hand `path` to `user` and make its parents traversable."""
    entry = pwd.getpwnam(user)
    for parent in path.resolve().parents:
        parent.chmod(parent.stat().st_mode | 0o011)
    os.chown(path, entry.pw_uid, entry.pw_gid)  # a file too (os.walk yields nothing for one)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
