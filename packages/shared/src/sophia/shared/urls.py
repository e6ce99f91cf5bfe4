"""Engine URLs as they may be shown: in logs and messages, never with their passwords."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

QUERY_PASSWORD = re.compile(r"(^|&)((?:ssl)?password)=[^&]*", re.IGNORECASE)
"""A password given as a query parameter, as libpq takes it (`?password=...`, `sslpassword`)."""


def without_password(url: str) -> str:
    """`url` (or a comma-separated list of them, as NATS takes) with each password shown as `***`."""
    return ",".join(_one_without_password(part) for part in url.split(","))


def _one_without_password(url: str) -> str:
    parts = urlsplit(url.strip())
    query = QUERY_PASSWORD.sub(r"\1\2=***", parts.query)
    if parts.password is None and query == parts.query:
        return url.strip()
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
