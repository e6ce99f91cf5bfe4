"""The Redis (Valkey) client every Sophia process shares, with timeouts on every call."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import redis.asyncio as redis
from redis import __version__ as REDIS_PY_VERSION
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError, MaxConnectionsError, RedisError

from sophia.core.errors import Unavailable
from sophia.shared.settings import Settings

DRIVER_INFO = DriverInfo(lib_version=REDIS_PY_VERSION)
"""What each connection tells the server it is (CLIENT SETINFO), known once: left to redis-py, every
new connection looks its version up in the installed packages' metadata (`importlib.metadata`, a
few milliseconds of directory scans on the event loop, which the hostile benchmark caught as loop
stalls while a busy process grew its pool)."""


class _WaitingPool(redis.BlockingConnectionPool):
    """A pool that waits for a connection, and says `MaxConnectionsError` when the wait runs out:
    redis-py's own says `ConnectionError("No connection available.")`, which reads as Redis being
    down (an open breaker, dropped connections, a flushed cache) when this process is only busy."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except ConnectionError as error:
            if isinstance(error, MaxConnectionsError) or not isinstance(
                error.__cause__, asyncio.TimeoutError
            ):
                raise
            raise MaxConnectionsError(
                f"All {self.max_connections} connections of this process were busy for {self.timeout} s."
            ) from error


class RedisConnection:
    """Owns one redis-py asyncio client (hiredis parser) on a bounded pool; `ping` raises `Unavailable`.

    Past `max_connections` a caller waits for a connection (up to `timeout_s`) rather than fails:
    redis-py's default pool raises `MaxConnectionsError`, a `ConnectionError`, which reads as Redis
    being down when it is only this process being busy. `pool_wait_s` bounds that wait apart from
    the calls' own timeout (default: `timeout_s`)."""

    def __init__(
        self, url: str, timeout_s: float = 2.0, max_connections: int = 64, *, pool_wait_s: float | None = None
    ) -> None:
        pool = _WaitingPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s if pool_wait_s is None else pool_wait_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            driver_info=DRIVER_INFO,
        )
        self.client = redis.Redis(connection_pool=pool)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> RedisConnection:
        """The process's connection to `url` (default: `SOPHIA_REDIS_URL`) with its timeouts and pool."""
        return cls(url or settings.redis_url or "", settings.engine_timeout_s, settings.redis_max_connections)

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as error:
            raise Unavailable(f"Redis is unreachable: {type(error).__name__}", retry_after_s=2) from error

    async def __aenter__(self) -> RedisConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.aclose()
