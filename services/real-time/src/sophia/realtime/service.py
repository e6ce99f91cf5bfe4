"""The real-time service assembled: NATS and PostgreSQL (for keys), one feed per stream, the hub
and the server, started and stopped together (`async with RealtimeService(settings) as service`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

from sophia.database import Database, tokens
from sophia.database.verifier import KeyVerifier
from sophia.events.connection import NatsConnection
from sophia.events.streams import ensure_streams, stream_specs
from sophia.realtime.channels import STREAMS
from sophia.realtime.feed import StreamFeed, wait_started
from sophia.realtime.hub import Hub
from sophia.realtime.server import RealtimeServer
from sophia.shared.settings import Settings

FEEDS_START_TIMEOUT_S = 30.0


class RealtimeService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub = Hub()
        self.server: RealtimeServer | None = None
        self._stack = AsyncExitStack()

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    async def __aenter__(self) -> RealtimeService:
        settings = self.settings
        try:
            nats = await self._stack.enter_async_context(
                NatsConnection(settings.nats_url or "", settings.engine_timeout_s)
            )
            database = await self._stack.enter_async_context(Database(settings))
            specs = stream_specs(settings)
            await ensure_streams(await nats.jetstream(), [specs[name] for name in sorted(STREAMS)])
            feeds = {
                name: StreamFeed(
                    nats, specs[name], name, self.hub, history_events=settings.realtime_history_events
                )
                for name in sorted(STREAMS)
            }
            for feed in feeds.values():
                self._stack.push_async_callback(feed.stop)
            await wait_started(list(feeds.values()), FEEDS_START_TIMEOUT_S)
            verifier = KeyVerifier.from_settings(database, settings)
            async with database.connection() as connection:
                token_secret = await tokens.signing_secret(connection)
            server = RealtimeServer(settings, verifier, feeds, self.hub, token_secret=token_secret)
            self.server = await self._stack.enter_async_context(server)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
