"""LISTEN on a connection of its own: pooled connections keep no session state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from sophia.database.pool import ENGINE_ERRORS

LISTEN_ERRORS: tuple[type[BaseException], ...] = (*ENGINE_ERRORS, asyncpg.PostgresError)
"""A LISTEN connection that cannot be had or kept."""


class Listener:
    """Calls `on_notify()` for each NOTIFY on `channel` while open; `open` says whether it could."""

    def __init__(self, dsn: str, channel: str, on_notify: Callable[[], None], *, timeout_s: float) -> None:
        self.dsn = dsn
        self.channel = channel
        self.on_notify = on_notify
        self.timeout_s = timeout_s
        self._connection: asyncpg.Connection | None = None

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def open(self) -> type[BaseException] | None:
        """Listen (again, after a lost connection); None when listening, else what went wrong."""
        if self.listening:
            return None
        try:
            self._connection = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
            await self._connection.add_listener(self.channel, self._notified)
        except LISTEN_ERRORS as error:
            await self.close()
            return type(error)
        return None

    def _notified(self, *_: object) -> None:
        self.on_notify()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*LISTEN_ERRORS):
                await asyncio.wait_for(connection.close(), self.timeout_s)
