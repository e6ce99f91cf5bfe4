"""The NATS connection a Sophia process shares; connects lazily so the API starts without NATS."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from sophia.core.errors import Unavailable


class NatsConnection:
    """Owns one nats-py client; `ping` (re)connects if needed and checks JetStream answers."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client: Client | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> Client:
        async with self._lock:
            if self.client is None or self.client.is_closed:
                self.client = await nats.connect(
                    self.url,
                    connect_timeout=self.timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    name="sophia",
                )
            return self.client

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                client = await self._connected()
                await client.jetstream(timeout=self.timeout_s).account_info()
        except (NatsError, OSError, TimeoutError) as error:
            if self.client is not None and not self.client.is_connected:
                await self._close()
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error

    async def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await asyncio.wait_for(client.close(), self.timeout_s)

    async def __aenter__(self) -> NatsConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
