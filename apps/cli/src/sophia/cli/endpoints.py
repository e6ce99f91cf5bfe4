"""`.sophia/endpoints.json`: where a running `sophia up` stack is, for scripts and other commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sophia.shared.files import write_private
from sophia.shared.settings import Settings

FILE_NAME = "endpoints.json"
RESTART = "not one `sophia up` wrote; stop the stack and start it again (make up), or remove the file."


def path(settings: Settings) -> Path:
    return Path(settings.data_dir) / FILE_NAME


def write(settings: Settings, endpoints: dict[str, Any]) -> Path:
    target = path(settings)
    # It holds the dev key and the database password.
    write_private(target, orjson.dumps(endpoints, option=orjson.OPT_INDENT_2))
    return target


def read(settings: Settings, *required: str) -> dict[str, Any] | None:
    """The running stack's endpoints; None where there is no file (no stack runs). A file that is
    not an object of texts holding each `required` name (not one `sophia up` wrote) exits 1 naming it."""
    target = path(settings)
    try:
        found = orjson.loads(target.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, orjson.JSONDecodeError) as error:
        raise SystemExit(f"{target} cannot be read ({error}): {RESTART}") from None
    if not isinstance(found, dict) or not all(
        value is None or isinstance(value, str) for value in found.values()
    ):
        raise SystemExit(f"{target} is not an object of texts: {RESTART}")
    missing = [name for name in required if not found.get(name)]
    if missing:
        raise SystemExit(f"{target} has no {', '.join(missing)}: {RESTART}")
    return found


def resolve_settings(needs: str = "database_url") -> Settings:
    """Settings from SOPHIA_* variables, with engine URLs filled from a running stack if unset;
    `needs` names the engine the command cannot do without (the dead-letter commands: NATS)."""
    settings = Settings()
    if getattr(settings, needs):
        return settings
    running = read(settings, needs)
    if not running:
        engine = {"database_url": "database", "nats_url": "NATS", "redis_url": "Redis"}[needs]
        raise SystemExit(
            f"No {engine}: set SOPHIA_{needs.upper()} or start the stack with `make up` (sophia up)."
        )
    return settings.model_copy(
        update={
            "database_url": settings.database_url or running.get("database_url"),
            "redis_url": settings.redis_url or running.get("redis_url"),
            "nats_url": settings.nats_url or running.get("nats_url"),
        }
    )
