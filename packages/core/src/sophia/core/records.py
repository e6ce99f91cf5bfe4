"""Catalog records: the natural key, the stored shape, and the rules for identifiers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"
"""`source_system` and `kind`: lowercase, start with a letter, at most 63 characters."""
MAX_DATA_FILTERS = 20
"""The most `data.<key>=<value>` equality filters a list or a search takes: each is a containment
test PostgreSQL binds (16,384 of them ran past asyncpg's 32,767 arguments, an `InterfaceError` the
breaker counted as PostgreSQL down)."""

EXTERNAL_ID_MAX_LENGTH = 256
EXTERNAL_ID_PATTERN = r"^[^\x00]+$"
"""Any text but NUL, which PostgreSQL cannot store."""

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def is_identifier(value: str) -> bool:
    """True if `value` may be a `source_system` or `kind`."""
    return _IDENTIFIER.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class RecordKey:
    """The natural key of a record: unique in the catalog."""

    source_system: str
    kind: str
    external_id: str


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What a list of records may be narrowed by; `data` is equality on top-level keys."""

    source_system: str | None = None
    kind: str | None = None
    updated_since: datetime | None = None
    data: tuple[tuple[str, str], ...] = ()
