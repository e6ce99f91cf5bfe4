"""Fixtures for the cache tests: a Redis client on the session's Valkey and a key namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from sophia.cache import CacheConfig, TtlClass
from sophia.shared.settings import Settings


class Clock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    """A loader that counts its calls and returns (or raises) what it is told."""

    def __init__(self, value: bytes = b"value") -> None:
        self.value = value
        self.error: BaseException | None = None
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[redis.Redis]:
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
def config() -> CacheConfig:
    """Defaults plus a `short` class, under a key prefix (and channel) of this test's own."""
    classes = {
        "api": TtlClass(fresh_s=60, stale_while_revalidate_s=10, stale_if_error_s=300),
        "short": TtlClass(fresh_s=10, stale_while_revalidate_s=5, stale_if_error_s=30),
    }
    return CacheConfig(ttl_classes=classes, key_prefix=f"test:{uuid.uuid4().hex}:", negative_ttl_s=2.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()
