"""Keyset pages: the page size a request gets, and the page as JSON bytes."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from sophia.shared.settings import Settings


def page_size(settings: Settings, limit: int | None) -> int:
    """`limit`, or the default, capped at the most a page may hold."""
    return min(limit or settings.page_size_default, settings.page_size_max)


def json_page(items_json: Iterable[str], next_cursor: str | None) -> bytes:
    """`{"items": [...], "next_cursor": ...}` from items that are already JSON text (no re-encoding)."""
    items = b",".join(item.encode() for item in items_json)
    return b'{"items":[' + items + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
