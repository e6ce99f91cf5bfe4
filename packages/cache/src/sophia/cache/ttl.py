"""TTL classes and the cache's other knobs, as typed configuration with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from sophia.shared.settings import Settings


@dataclass(frozen=True, slots=True)
class TtlClass:
    """How long a value of one kind is fresh, and how long it may be served stale afterwards.

    `stale_while_revalidate_s`: past freshness, serve the old value at once and refresh in the
    background. `stale_if_error_s`: past freshness, when the loader fails, serve the old value
    (marked stale) for this long. Both windows start when freshness ends.
    """

    fresh_s: float
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0


def default_ttl_classes() -> dict[str, TtlClass]:
    """The classes: session data 5 min, API responses 1 min, records by id 5 min, static data 1 h."""
    return {
        "session": TtlClass(fresh_s=300.0, stale_while_revalidate_s=30.0, stale_if_error_s=300.0),
        "api": TtlClass(fresh_s=60.0, stale_while_revalidate_s=10.0, stale_if_error_s=300.0),
        "record": TtlClass(fresh_s=300.0, stale_while_revalidate_s=50.0, stale_if_error_s=300.0),
        "static": TtlClass(fresh_s=3600.0, stale_while_revalidate_s=300.0, stale_if_error_s=3600.0),
    }


REDIS_CONNECTIONS_KEPT = 4
"""Connections of the pool the cache's calls leave to others: the invalidation channel's
subscription, readiness probes, the epoch."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Everything `TieredCache` needs to know; one per process, built from the settings."""

    enabled: bool = True
    """False: every get calls its loader at once (no tiers, no single-flight), to measure the source."""
    ttl_classes: dict[str, TtlClass] = field(default_factory=default_ttl_classes)
    negative_ttl_s: float = 5.0
    l1_max_bytes: int = 64 * 1024 * 1024
    key_prefix: str = "sophia:cache:"
    redis_timeout_s: float = 0.5
    redis_in_flight: int = 60
    """Cache calls to Redis at once; more wait their turn (the client's pool holds a few more, for
    the invalidation channel and the probes)."""
    breaker_open_s: float = 1.0
    reconnect_max_s: float = 1.0
    tombstone_s: float = 30.0
    """How long an invalidation keeps slower loads (begun before it) out of Redis."""
    lock_s: float = 2.0
    """Cross-process stampede protection: on a miss in both tiers one process loads, under a Redis
    lock held at most this long, while the others wait for its value (0: each process loads)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheConfig:
        """The `SOPHIA_CACHE_*` knobs; stale-while-revalidate windows are a sixth of freshness."""

        def ttl_class(fresh_s: float) -> TtlClass:
            return TtlClass(fresh_s, fresh_s / 6, settings.cache_stale_if_error_s)

        return cls(
            enabled=settings.cache_enabled,
            ttl_classes={
                "session": ttl_class(settings.cache_ttl_session_s),
                "api": ttl_class(settings.cache_ttl_api_s),
                "record": ttl_class(settings.cache_ttl_record_s),
                "static": ttl_class(settings.cache_ttl_static_s),
                "ml": ttl_class(settings.cache_ttl_ml_s),
            },
            negative_ttl_s=settings.cache_negative_ttl_s,
            l1_max_bytes=settings.cache_l1_max_bytes,
            key_prefix=settings.cache_key_prefix,
            redis_timeout_s=settings.cache_redis_timeout_s,
            redis_in_flight=settings.redis_max_connections - REDIS_CONNECTIONS_KEPT,
            lock_s=settings.cache_lock_s,
        )

    @property
    def channel(self) -> str:
        """The pub/sub channel invalidations of keys and tags travel on (namespaced like the keys)."""
        return f"{self.key_prefix}invalidate"

    @property
    def clear_channel(self) -> str:
        """The pub/sub channel clears travel on (a new epoch): every cache hears these, only a cache
        that holds what writes make stale hears `channel` too (`TieredCache(hears_writes=...)`)."""
        return f"{self.key_prefix}clear"

    def ttl_class(self, name: str, ttl_s: float | None = None) -> TtlClass:
        """The class called `name`, with its freshness replaced by `ttl_s` when given (per-key override)."""
        try:
            ttl_class = self.ttl_classes[name]
        except KeyError:
            raise ValueError(f"unknown TTL class {name!r}; known: {sorted(self.ttl_classes)}") from None
        if ttl_s is None:
            return ttl_class
        return TtlClass(ttl_s, ttl_class.stale_while_revalidate_s, ttl_class.stale_if_error_s)
