"""The Redis (Valkey) client every Sophia process shares, with timeouts on every call."""

from __future__ import annotations

from types import TracebackType

import redis.asyncio as redis
from redis.exceptions import RedisError

from sophia.core.errors import Unavailable


class RedisConnection:
    """Owns one redis-py asyncio client (hiredis parser); `ping` raises `Unavailable`."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self.timeout_s = timeout_s

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
