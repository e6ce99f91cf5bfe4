"""The three engines together: external when `SOPHIA_*_URL` names them, embedded otherwise."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sophia.engines.nats import EmbeddedNats
from sophia.engines.postgres import EmbeddedPostgres
from sophia.engines.valkey import EmbeddedValkey
from sophia.shared.settings import Settings


@dataclass(frozen=True)
class EngineUrls:
    database_url: str
    redis_url: str
    nats_url: str

    def as_env(self) -> dict[str, str]:
        return {
            "SOPHIA_DATABASE_URL": self.database_url,
            "SOPHIA_REDIS_URL": self.redis_url,
            "SOPHIA_NATS_URL": self.nats_url,
        }


class _Engine(Protocol):
    async def start(self) -> str: ...
    async def stop(self) -> None: ...


class Engines:
    """Async context manager: starts what is not configured, yields the URLs, stops what it started."""

    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        data_dir = Path(settings.data_dir)
        self.settings = settings
        self.postgres = None if settings.database_url else EmbeddedPostgres(data_dir, durable=durable)
        self.valkey = None if settings.redis_url else EmbeddedValkey(data_dir)
        self.nats = (
            None
            if settings.nats_url
            else EmbeddedNats(
                data_dir, sync_interval=settings.nats_sync_interval, max_procs=settings.nats_max_procs
            )
        )
        self.started: list[_Engine] = []

    async def _start(self, engine: _Engine | None, configured: str | None) -> str:
        if engine is None:
            assert configured is not None
            return configured
        url = await engine.start()
        self.started.append(engine)
        return url

    async def __aenter__(self) -> EngineUrls:
        results = await asyncio.gather(
            self._start(self.postgres, self.settings.database_url),
            self._start(self.valkey, self.settings.redis_url),
            self._start(self.nats, self.settings.nats_url),
            return_exceptions=True,  # let every start finish, so none is left running unstopped
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        database_url, redis_url, nats_url = (str(result) for result in results)
        return EngineUrls(database_url, redis_url, nats_url)

    async def stop(self) -> None:
        await asyncio.gather(*(engine.stop() for engine in self.started))
        self.started.clear()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class EnginesThread:
    """`Engines` for synchronous callers (pytest, benchmarks): supervised on a private event loop."""

    def __init__(self, settings: Settings, *, durable: bool = True) -> None:
        self.engines = Engines(settings, durable=durable)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="engines", daemon=True)

    def start(self, timeout_s: float = 120.0) -> EngineUrls:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.engines.__aenter__(), self.loop).result(timeout_s)

    def run(self, coroutine: object, timeout_s: float = 60.0) -> object:
        """Run a coroutine on the engines' loop (e.g. a chaos test's restart)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def stop(self, timeout_s: float = 60.0) -> None:
        asyncio.run_coroutine_threadsafe(self.engines.stop(), self.loop).result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
