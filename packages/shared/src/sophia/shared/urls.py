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
    userinfo, at, host = parts.netloc.rpartition("@")  # the host as written (IPv6, port and all)
    if parts.scheme.lower() in TOKEN_SCHEMES and parts.username and not parts.password:
        userinfo = "***"
    elif parts.password is not None:
        userinfo = f"{userinfo.partition(':')[0]}:***"
    netloc = f"{userinfo}{at}{host}"
    query = QUERY_PASSWORD.sub(r"\1\2=***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url.strip()
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
