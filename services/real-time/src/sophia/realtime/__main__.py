"""`python -m sophia.realtime`: the real-time service, until SIGTERM or SIGINT (then it drains)."""

from __future__ import annotations

import asyncio
import signal

import uvloop

from sophia.realtime.service import RealtimeService
from sophia.shared.logging import configure_logging, get_logger
from sophia.shared.settings import Settings

log = get_logger("sophia.realtime")


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with RealtimeService(settings) as service:
        log.info("realtime_ready", port=service.port)
        await stop.wait()
        log.info("realtime_draining")
    log.info("realtime_stopped")


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
