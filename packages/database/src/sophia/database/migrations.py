"""Versioned plain-SQL migrations, applied once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from sophia.core.errors import SophiaError
from sophia.database.pool import Connection
from sophia.shared.logging import get_logger

log = get_logger(__name__)

LOCK_KEY = 0x50F1A  # one advisory lock for all of Sophia's migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Checksums of whole files, as releases before comment-free checksums recorded them, of the
# migrations whose comments were reworded since: a database migrated then is still accepted.
WHOLE_FILE_CHECKSUMS = {
    1: "771d516794f81683887c4bdd753261a4ab694472ead74ad4fbc83d27929655b7",
    11: "1133a289a46b405c9e0ce470133ba7519313bd62997dc891a069a6fcd5cb0bca",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Of the statements alone: comment lines and blank lines are left out, so rewording a
        comment of an applied migration is not a change of it."""
        statements = "\n".join(
            line.rstrip()
            for line in self.sql.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        )
        return hashlib.sha256(statements.encode()).hexdigest()

    def accepts(self, recorded: str) -> bool:
        """Whether `recorded` is this migration's checksum, or one an older release recorded for it."""
        whole_file = hashlib.sha256(self.sql.encode()).hexdigest()
        return recorded in (self.checksum, whole_file, WHOLE_FILE_CHECKSUMS.get(self.version))


def available() -> list[Migration]:
    """The migrations shipped in `sophia/database/sql`, in version order."""
    found = []
    for entry in resources.files("sophia.database").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


class MigrationMismatch(SophiaError):
    """An applied migration's file changed after it ran (a `SophiaError`: commands say so in a
    line, not a traceback)."""

    title = "Migration changed"


async def migrate(connection: Connection, timeout_s: float = 600.0) -> list[Migration]:
    """Apply what is missing; safe to run from several processes at once. Returns what it applied."""
    applied_now = []
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE SCHEMA IF NOT EXISTS sophia_core;
            CREATE TABLE IF NOT EXISTS sophia_core.schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            row["version"]: row["checksum"]
            for row in await connection.fetch("SELECT version, checksum FROM sophia_core.schema_migrations")
        }
        for migration in available():
            if migration.version in done:
                recorded = done[migration.version]
                if not migration.accepts(recorded):
                    raise MigrationMismatch(
                        f"migration {migration.version} ({migration.name}) changed after it was applied"
                    )
                if recorded != migration.checksum:  # recorded by an older release: keep the new form
                    await connection.execute(
                        "UPDATE sophia_core.schema_migrations SET checksum = $2 WHERE version = $1",
                        migration.version,
                        migration.checksum,
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql, timeout=timeout_s)
                await connection.execute(
                    "INSERT INTO sophia_core.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration_applied", version=migration.version, name=migration.name)
            applied_now.append(migration)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now
