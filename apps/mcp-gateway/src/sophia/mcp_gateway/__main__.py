"""`python -m sophia.mcp_gateway`: the gateway on `SOPHIA_MCP_HOST:SOPHIA_MCP_PORT`, until SIGTERM
or Ctrl-C, after which calls in flight get `shutdown_grace_s` to finish."""

from __future__ import annotations

import math

import uvicorn

from sophia.mcp_gateway.server import create_app
from sophia.shared.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.mcp_host,
        port=settings.mcp_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local caller could then
        # name itself another address and never meet the failed-key limit (docs/mcp.md)
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
