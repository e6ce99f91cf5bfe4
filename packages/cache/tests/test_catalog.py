"""What a catalog write makes stale: the records it names and every list page whose scope covers it."""

from uuid import uuid4

import redis.asyncio as redis

from sophia.cache import CacheConfig, TieredCache
from sophia.cache.catalog import (
    LISTS_TAG,
    MAX_SCOPES,
    catalog_changed,
    list_key,
    list_tags,
    list_tags_changed,
    record_key,
)
from sophia.core.records import RecordFilter

from .conftest import CountingLoader


def test_a_write_to_one_scope_drops_the_four_list_tags_covering_it() -> None:
    assert list_tags_changed([("crm", "deal")]) == ["list:*:*", "list:*:deal", "list:crm:*", "list:crm:deal"]


def test_a_write_spanning_more_scopes_than_the_limit_drops_every_list_at_once() -> None:
    scopes = [("crm", f"kind-{index}") for index in range(MAX_SCOPES + 1)]
    assert list_tags_changed(scopes) == [LISTS_TAG]
    assert len(list_tags_changed(scopes[:MAX_SCOPES])) == 2 * MAX_SCOPES + 2


async def test_a_write_past_max_keys_clears_the_whole_cache_in_every_tier(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    loader = CountingLoader()
    untouched = RecordFilter(source_system="erp", kind="invoice")
    async with TieredCache(redis_client, config) as cache:
        await cache.get_or_load(list_key(untouched, None, 10), loader, tags=list_tags(untouched))
        await catalog_changed(cache, [uuid4(), uuid4()], [("crm", "deal")], max_keys=1)
        assert len(cache.l1) == 0
        assert cache.l2.epoch == 1
        assert await redis_client.get(cache.l2.epoch_key) == b"1"


async def test_a_write_within_max_keys_drops_its_records_and_covering_lists_only(
    redis_client: redis.Redis, config: CacheConfig
) -> None:
    changed, other = uuid4(), uuid4()
    covering = RecordFilter(kind="deal")
    elsewhere = RecordFilter(source_system="erp", kind="invoice")
    loader = CountingLoader()
    async with TieredCache(redis_client, config) as cache:
        for record_id in (changed, other):
            await cache.get_or_load(record_key(record_id), loader)
        for where in (covering, elsewhere):
            await cache.get_or_load(list_key(where, None, 10), loader, tags=list_tags(where))

        await catalog_changed(cache, [changed], [("crm", "deal")], max_keys=10)

        kept = [
            record_key(changed),
            record_key(other),
            list_key(covering, None, 10),
            list_key(elsewhere, None, 10),
        ]
        assert [key in cache.l1 for key in kept] == [False, True, False, True]
        assert cache.l2.epoch == 0
