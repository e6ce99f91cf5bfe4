"""Engine URLs as they may be shown: in logs and messages, never with their passwords."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

QUERY_PASSWORD = re.compile(r"(^|&)((?:ssl)?password)=[^&]*", re.IGNORECASE)
"""A password given as a query parameter, as libpq takes it (`?password=...`, `sslpassword`)."""
TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
"""NATS's schemes: a user given without a password there is a token (`nats://TOKEN@host`)."""


def without_password(url: str) -> str:
    """`url` (or a comma-separated list of them, as NATS takes) with each password shown as `***`,
    and a NATS token (a user without a password) too."""
    return ",".join(_one_without_password(part) for part in url.split(","))


def _one_without_password(url: str) -> str:
    parts = urlsplit(url.strip())
    query = QUERY_PASSWORD.sub(r"\1\2=***", parts.query)
    token = parts.scheme.lower() in TOKEN_SCHEMES and bool(parts.username) and not parts.password
    if parts.password is None and query == parts.query and not token:
        return url.strip()
    netloc = parts.netloc
    if token:
        netloc = f"***@{netloc.rpartition('@')[2]}"
    elif parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
