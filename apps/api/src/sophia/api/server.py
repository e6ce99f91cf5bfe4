"""Run the API under the chosen ASGI server: `python -m sophia.api.server` (settings from SOPHIA_*).

granian is the default (docs/benchmarks.md has the measurement); uvicorn stays selectable. Both
drain on SIGTERM: stop accepting, let in-flight requests finish, run the lifespan's shutdown.
"""

from __future__ import annotations

import math
import signal
import sys

from sophia.shared.settings import Settings

APP = "sophia.api.app:factory"


def serve(settings: Settings) -> None:
    if settings.api_server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            APP,
            factory=True,
            address=settings.api_host,
            port=settings.api_port,
            interface=Interfaces.ASGI,
            workers=settings.api_workers,
            loop=Loops.uvloop,
            backlog=2048,
            log_access=False,
            respawn_failed_workers=True,
            workers_kill_timeout=math.ceil(settings.shutdown_grace_s),
        ).serve()
    else:
        import uvicorn

        # uvicorn drains, then re-raises SIGTERM by default (exit 143); a drained stop is a clean one.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(
            APP,
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
            log_level="warning",
        )


if __name__ == "__main__":
    serve(Settings())
