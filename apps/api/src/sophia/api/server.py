"""Run the API under the chosen ASGI server: `python -m sophia.api.server` (settings from SOPHIA_*).

granian is the default (docs/decisions/0002-asgi-server.md has the measurement); uvicorn stays
selectable. Both drain on SIGTERM: stop accepting, let in-flight requests finish, run the
lifespan's shutdown.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
from pathlib import Path

from sophia.shared.settings import Settings

APP = "sophia.api.app:factory"
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client reads it when first imported, so this module must not import the metrics."""


def serve(settings: Settings) -> None:
    os.environ["SOPHIA_SERVER_PID"] = str(os.getpid())  # app.SERVER_PID_VARIABLE, read by workers
    if settings.api_workers > 1 and MULTIPROCESS_DIR_VARIABLE not in os.environ:
        metrics_dir = Path(settings.data_dir) / "metrics" / f"api-{os.getpid()}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)  # inherited by the workers
        try:
            _run(settings)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        _run(settings)


def _run(settings: Settings) -> None:
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
            proxy_headers=False,  # no X-Forwarded-For believed: the key gate limits by address
        )


if __name__ == "__main__":
    serve(Settings())
