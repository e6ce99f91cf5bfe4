"""`python -m sophia.workers`: the workers' process (for now the outbox relay), until SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from sophia.database import Database
from sophia.events.connection import NatsConnection
from sophia.events.streams import stream_specs
from sophia.shared.logging import configure_logging, get_logger
from sophia.shared.settings import Settings
from sophia.workers.relay import OutboxRelay

log = get_logger("sophia.workers")


async def run_workers(settings: Settings, stop: asyncio.Event) -> None:
    """Run every worker until `stop` is set; each finishes what it holds first."""
    if not (settings.database_url and settings.nats_url):
        raise RuntimeError("SOPHIA_DATABASE_URL and SOPHIA_NATS_URL must be set (`sophia up` sets them)")
    async with (
        Database(settings) as database,
        NatsConnection(settings.nats_url, settings.engine_timeout_s) as nats,
        OutboxRelay(
            database,
            nats,
            stream_specs(settings),
            batch=settings.outbox_batch,
            poll_s=settings.outbox_poll_s,
        ) as relay,
    ):
        log.info("workers_started")
        await relay.run(stop)
    log.info("workers_stopped")


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if settings.workers_metrics_port:
        start_http_server(settings.workers_metrics_port, addr=settings.api_host)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, stop.set)
        await run_workers(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
