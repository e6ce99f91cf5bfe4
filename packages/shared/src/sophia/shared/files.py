"""Files that hold secrets: written owner-only from the first byte, and atomically."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` with mode 0600 (never briefly world-readable), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content.encode() if isinstance(content, str) else content)
    os.replace(temporary, path)


def private_secret(path: Path) -> str:
    """The secret kept in `path` (0600), made at first use: an engine's password, the same across
    restarts of that engine's data directory."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()
