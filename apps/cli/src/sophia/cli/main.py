"""The `sophia` command."""

from __future__ import annotations

import asyncio

import typer
from pydantic import ValidationError
from rich.console import Console

from sophia.cli import audit, dlq, jobs, keys, loadtest, ml, tail
from sophia.cli.endpoints import resolve_settings
from sophia.cli.failures import run_on_database, settings_error, with_connection
from sophia.shared.logging import configure_logging
from sophia.shared.settings import Settings

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
    from sophia.cli.up import run_up
    from sophia.events.streams import StreamStorageRefused

    configure_logging("INFO", json=False)
    settings = Settings()
    try:
        asyncio.run(run_up(settings, settings.seed_records if seed_records is None else seed_records))
    except StreamStorageRefused as error:  # the engines are stopped by now
        raise SystemExit(f"sophia up cannot start: {error.detail}") from None


@app.command("env")
def env_command() -> None:
    """Print `export SOPHIA_API=... SOPHIA_KEY=...` for the running stack: eval "$(sophia env)"."""
    from sophia.cli import endpoints

    running = endpoints.read(Settings(), "api", "api_key")
    if not running:
        raise SystemExit("The stack is not running: start it with `make up`.")
    realtime = f" SOPHIA_REALTIME={running['realtime']}" if running.get("realtime") else ""
    print(f"export SOPHIA_API={running['api']} SOPHIA_KEY={running['api_key']}{realtime}")


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
    # A fresh interpreter: this one has imported prometheus-client, which must first see the
    # multi-worker metrics directory that the server sets up.
    os.execv(sys.executable, [sys.executable, "-m", "sophia.api.server"])  # noqa: S606


if __name__ == "__main__":
    app()
