"""What one API process holds for its lifetime, built in the lifespan and reached by dependencies
(`sophia.api.dependencies`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sophia.api.auth import KeyVerifier
from sophia.api.health.service import Readiness
from sophia.api.records.spool import Spools
from sophia.cache import TieredCache
from sophia.cache.connection import RedisConnection
from sophia.database import Database
from sophia.events.connection import NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.ml.models import Models
from sophia.shared.settings import Settings


@dataclass
class AppState:
    settings: Settings
    database: Database
    redis: RedisConnection
    nats: NatsConnection
    keys: KeyVerifier
    cache: TieredCache
    cache_control: str
    """`Cache-Control` of cached API responses (private: they need a key)."""
    events: EventPublisher
    readiness: Readiness
    """The last /readyz verdict and the probe in flight."""
    spools: Spools
    """What bulk bodies waiting for COPY may hold."""
    models: Models | None = None
    """The ML models, when `SOPHIA_ML_ENABLED`."""
    token_secret: bytes | None = field(default=None, repr=False)
    """The real-time tokens' signing secret, read from PostgreSQL at the first token asked for."""
