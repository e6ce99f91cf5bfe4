"""What the catalog's reads are cached under, and what a write to the catalog makes stale.

One place for both, so readers (the API) and writers (the API, `sophia seed`, later the event
consumers) cannot drift apart.

- A record by id: key `record:{id}`. A write names the ids it changed.
- A list page: key `records:{filter digest}:{cursor}:{limit}`, tagged with its filter's scope
  `list:{source_system or *}:{kind or *}`. A write to (source_system, kind) can change any list
  whose scope covers it, whatever the other filters, so it drops four tags: `list:s:k`,
  `list:s:*`, `list:*:k` and `list:*:*`. Coarser than "the pages holding the record", and right
  where that is not: an insert or an update moving a record into a filter changes pages that did
  not hold it.
- A page of `active_deals_mv`: key `deals:active:{cursor}:{limit}`, tag `view:active_deals`,
  dropped when the view is refreshed (its only change).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sophia.cache.tiered import TieredCache
from sophia.core.cursor import filter_fingerprint
from sophia.core.records import RecordFilter

ACTIVE_DEALS_TAG = "view:active_deals"
ANALYTICS_TAG = "view:analytics"
"""Every cached analytics answer carries it: the analytics consumer drops them when it moves a summary."""
LISTS_TAG = "lists"
"""Every cached page carries it: a write spanning more scopes than `MAX_SCOPES` drops them all."""
MAX_SCOPES = 64


def record_key(record_id: UUID | str) -> str:
    """By id; a `str` must be the canonical `str(UUID)` spelling (the hot path passes it unparsed)."""
    return f"record:{record_id}"


def list_key(where: RecordFilter, cursor: str | None, limit: int) -> str:
    return f"records:{filter_fingerprint(where)}:{cursor or ''}:{limit}"


def list_tags(where: RecordFilter) -> tuple[str, str]:
    """The tags a page of `where` is stored with."""
    return list_tag(where.source_system, where.kind), LISTS_TAG


def list_tag(source_system: str | None, kind: str | None) -> str:
    return f"list:{source_system or '*'}:{kind or '*'}"


def list_tags_changed(scopes: Iterable[tuple[str, str]]) -> list[str]:
    """The list tags a write to each (source_system, kind) makes stale."""
    scopes = set(scopes)
    if len(scopes) > MAX_SCOPES:
        return [LISTS_TAG]
    tags: set[str] = set()
    for source_system, kind in scopes:
        tags.update(
            (
                list_tag(source_system, kind),
                list_tag(source_system, None),
                list_tag(None, kind),
                list_tag(None, None),
            )
        )
    return sorted(tags)


def active_deals_key(cursor: str | None, limit: int) -> str:
    return f"deals:active:{cursor or ''}:{limit}"


async def catalog_changed(
    cache: TieredCache,
    record_ids: Iterable[UUID],
    scopes: Iterable[tuple[str, str]],
    *,
    max_keys: int,
) -> None:
    """Drop what a committed write made stale: the records it changed and the lists covering them;
    past `max_keys` records, everything (one epoch bump instead of naming them all)."""
    keys = [record_key(record_id) for record_id in record_ids]
    if len(keys) > max_keys:
        await cache.clear()
        return
    await cache.invalidate(keys=keys, tags=list_tags_changed(scopes))
