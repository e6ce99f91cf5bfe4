"""TTL classes and the cache's other knobs, as typed configuration with the plan's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """The plan's classes: session data 5 min, API responses 1 min, static data 1 h."""
    return {
        "session": TtlClass(fresh_s=300.0, stale_while_revalidate_s=30.0, stale_if_error_s=300.0),
        "api": TtlClass(fresh_s=60.0, stale_while_revalidate_s=10.0, stale_if_error_s=300.0),
        "static": TtlClass(fresh_s=3600.0, stale_while_revalidate_s=300.0, stale_if_error_s=3600.0),
    }


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
    breaker_open_s: float = 1.0
    reconnect_max_s: float = 1.0
    tombstone_s: float = 30.0
    """How long an invalidation keeps slower loads (begun before it) out of Redis."""

    @property
    def channel(self) -> str:
        """The pub/sub channel invalidations travel on (namespaced like the keys)."""
        return f"{self.key_prefix}invalidate"

    def ttl_class(self, name: str, ttl_s: float | None = None) -> TtlClass:
        """The class called `name`, with its freshness replaced by `ttl_s` when given (per-key override)."""
        try:
            ttl_class = self.ttl_classes[name]
        except KeyError:
            raise ValueError(f"unknown TTL class {name!r}; known: {sorted(self.ttl_classes)}") from None
        if ttl_s is None:
            return ttl_class
        return TtlClass(ttl_s, ttl_class.stale_while_revalidate_s, ttl_class.stale_if_error_s)
