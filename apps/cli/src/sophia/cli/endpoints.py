"""`.sophia/endpoints.json`: where a running `sophia up` stack is, for scripts and other commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sophia.shared.files import write_private
from sophia.shared.settings import Settings

FILE_NAME = "endpoints.json"


def path(settings: Settings) -> Path:
    return Path(settings.data_dir) / FILE_NAME


def write(settings: Settings, endpoints: dict[str, Any]) -> Path:
    target = path(settings)
    # It holds the dev key and the database password.
    write_private(target, orjson.dumps(endpoints, option=orjson.OPT_INDENT_2))
    return target


def read(settings: Settings) -> dict[str, Any] | None:
    try:
        return orjson.loads(path(settings).read_bytes())  # type: ignore[no-any-return]
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def resolve_settings() -> Settings:
    """Settings from SOPHIA_* variables, with engine URLs filled from a running stack if unset."""
    settings = Settings()
    if settings.database_url:
        return settings
    running = read(settings)
    if not running:
        raise SystemExit(
            "No database: set SOPHIA_DATABASE_URL or start the stack with `make up` (sophia up)."
        )
    return settings.model_copy(
        update={
            "database_url": running["database_url"],
            "redis_url": settings.redis_url or running.get("redis_url"),
            "nats_url": settings.nats_url or running.get("nats_url"),
        }
    )
