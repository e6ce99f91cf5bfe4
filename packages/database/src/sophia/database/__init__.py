"""Sophia's PostgreSQL access: the pool, migrations, repositories, COPY ingest and the outbox."""

from sophia.database.pool import Database

__all__ = ["Database"]
