"""Embedded engines (PostgreSQL, Valkey, NATS JetStream) started, supervised and stopped."""

from sophia.engines.stack import Engines, EnginesThread, EngineUrls

__all__ = ["EngineUrls", "Engines", "EnginesThread"]
