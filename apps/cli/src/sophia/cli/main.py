"""The `sophia` command."""

from __future__ import annotations

import asyncio
import shlex

import typer
from pydantic import ValidationError
from rich.console import Console

from sophia.cli import audit, dlq, jobs, keys, loadtest, ml, tail
from sophia.cli.endpoints import resolve_settings
from sophia.cli.failures import run_on_database, settings_error, with_connection
from sophia.shared.logging import configure_logging
from sophia.shared.settings import Settings
from sophia.shared.urls import without_password

app = typer.Typer(help="Sophia: run, migrate, seed and administer the platform.", no_args_is_help=True)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(jobs.app, name="jobs")
app.add_typer(dlq.app, name="dlq")
app.add_typer(ml.app, name="ml")
views = typer.Typer(help="Analytics views.", no_args_is_help=True)
app.add_typer(views, name="views")
analytics_app = typer.Typer(help="Sales analytics (docs/analytics.md).", no_args_is_help=True)
app.add_typer(analytics_app, name="analytics")
app.command("loadtest")(loadtest.command)
app.command("tail")(tail.command)
console = Console()
MAX_SEED_RECORDS = 10_000_000
"""The most demo records one `seed` (or `up`) loads: about half an hour at the bulk path's pace."""


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    configure_logging("DEBUG" if verbose else "WARNING", json=False)
    try:  # a SOPHIA_* variable that does not parse: one line naming it, before any command runs
        Settings()
    except ValidationError as error:
        raise SystemExit(settings_error(error)) from None


@app.command()
def up(
    seed_records: int = typer.Option(
        None, "--seed-records", min=0, max=MAX_SEED_RECORDS, help="Demo records for an empty catalog."
    ),
) -> None:
    """Start engines (unless SOPHIA_*_URL name them), migrate, seed, and serve the API until Ctrl-C."""
    from sophia.cli.up import StackRunning, run_up
    from sophia.core.errors import Unavailable
    from sophia.events.streams import StreamStorageRefused

    configure_logging("INFO", json=False)
    settings = Settings()
    try:
        asyncio.run(run_up(settings, settings.seed_records if seed_records is None else seed_records))
    except StackRunning as error:
        raise SystemExit(f"sophia up cannot start: {error.detail}.") from None
    except (StreamStorageRefused, Unavailable) as error:  # the engines are stopped by now
        named = [
            without_password(url)
            for url in (settings.database_url, settings.redis_url, settings.nats_url)
            if url
        ]
        where = f" ({', '.join(named)})" if named else ""
        raise SystemExit(f"sophia up cannot start: {error.detail.rstrip('.')}{where}.") from None
    except (NotADirectoryError, FileExistsError, PermissionError) as error:  # the data directory
        raise SystemExit(f"sophia up cannot start: {error.strerror}: {error.filename}") from None


@app.command("env")
def env_command() -> None:
    """Print `export SOPHIA_API=... SOPHIA_KEY=...` for the running stack: eval "$(sophia env)"."""
    from sophia.cli import endpoints

    running = endpoints.read(Settings(), "api", "api_key")
    if not running:
        raise SystemExit("The stack is not running: start it with `make up`.")
    # quoted for the shell: `eval` runs what it is given, and the endpoints file is only a file
    realtime = f" SOPHIA_REALTIME={shlex.quote(running['realtime'])}" if running.get("realtime") else ""
    api, key = shlex.quote(running["api"]), shlex.quote(running["api_key"])
    print(f"export SOPHIA_API={api} SOPHIA_KEY={key}{realtime}")


@app.command("migrate")
def migrate_command() -> None:
    """Apply pending migrations (idempotent; safe from several processes at once)."""
    from sophia.database.migrations import migrate

    applied = [f"{m.version:04d}_{m.name}" for m in with_connection(migrate)]
    console.print(f"Applied: {', '.join(applied)}" if applied else "Up to date.")


@app.command("seed")
def seed_command(
    records: int = typer.Option(5_000, "--records", min=1, max=MAX_SEED_RECORDS, help="How many records."),
    seed: int = typer.Option(42, "--seed", help="Same seed, same data."),
) -> None:
    """Load deterministic demo data (HubSpot, Gong, Slack shapes) through the bulk path."""
    from sophia.cli.caches import running_caches
    from sophia.cli.seed import seed as load
    from sophia.database import Database

    settings = resolve_settings()

    async def run() -> None:
        async with Database(settings) as database, running_caches(settings) as cache:
            limit = settings.cache_invalidate_max_keys
            result = await load(database, records, seed, settings.max_line_bytes, cache, limit)
        console.print(f"{result.received} records: {result.created} created, {result.updated} updated.")

    run_on_database(run(), settings.database_url)


@views.command("refresh")
def refresh_views() -> None:
    """Check active_deals_mv against the catalog and mend what differs (the catalog's writes keep it;
    needed after a load with triggers off or a restore). Readers are not blocked."""
    from sophia.cache.catalog import ACTIVE_DEALS_TAG
    from sophia.cli.caches import running_caches
    from sophia.database import Database
    from sophia.database import views as view_store

    settings = resolve_settings()

    async def run() -> int:
        async with Database(settings) as database, running_caches(settings) as cache:
            async with database.connection() as connection:
                mended = await view_store.refresh_active_deals(
                    connection, settings.db_maintenance_timeout_s, "cli"
                )
            if cache is not None:
                await cache.invalidate(tags=[ACTIVE_DEALS_TAG])
        return mended

    mended = run_on_database(run(), settings.database_url)
    console.print(f"Refreshed active_deals_mv: {mended} rows mended.")


@analytics_app.command("rebuild")
def rebuild_analytics() -> None:
    """Recompute every analytics summary from the catalog and the stage history (what the consumer
    keeps incrementally, exactly); the consumer waits meanwhile and goes on after."""
    from sophia.cache.catalog import ANALYTICS_TAG
    from sophia.cli.caches import running_caches
    from sophia.database import Database, analytics

    settings = resolve_settings()

    async def run() -> tuple[int, int, int]:
        async with Database(settings) as database, running_caches(settings) as cache:
            async with database.connection() as connection:
                with console.status("Rebuilding the analytics ...") as status:
                    counted = await analytics.rebuild(
                        connection, status.update, settings.db_maintenance_timeout_s
                    )
            if cache is not None:
                await cache.invalidate(tags=[ANALYTICS_TAG])
        return counted

    deals, changes, talks = run_on_database(run(), settings.database_url)
    console.print(
        f"Rebuilt the analytics: {deals:,} deals, {changes:,} stage changes, {talks:,} calls and messages."
    )


@app.command()
def serve() -> None:
    """Serve the API alone against SOPHIA_*_URL (what `up` runs; for containers)."""
    import os
    import sys

    settings = resolve_settings()
    # The server's worker processes build their settings from the environment.
    for name, value in {
        "SOPHIA_DATABASE_URL": settings.database_url,
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
    }.items():
        if value:
            os.environ[name] = value
    _check_port_free(settings.api_host, settings.api_port)
    # A fresh interpreter: this one has imported prometheus-client, which must first see the
    # multi-worker metrics directory that the server sets up.
    os.execv(sys.executable, [sys.executable, "-m", "sophia.api.server"])  # noqa: S606


def _check_port_free(host: str, port: int) -> None:
    """One line, not the server's workers' tracebacks, when the API's port is taken."""
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise SystemExit(f"sophia serve cannot listen on {host}:{port}: {error.strerror}.") from None


if __name__ == "__main__":
    app()
