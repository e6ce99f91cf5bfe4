"""`sophia audit verify`: walk the audit trail's hash chain and say whether it holds."""

from __future__ import annotations

import typer
from rich.console import Console

from sophia.cli.endpoints import resolve_settings
from sophia.cli.failures import run_on_database

app = typer.Typer(help="The append-only audit trail.", no_args_is_help=True)
console = Console()


@app.command("verify")
def verify_command() -> None:
    """Recompute every row's hash in order; exit 1 at the first row that does not match."""
    from sophia.database import Database, audit

    settings = resolve_settings()

    async def run() -> tuple[int, audit.Broken | None]:
        verdict: tuple[int, audit.Broken | None] = (0, None)
        async with (
            Database(settings) as database,
            database.connection() as connection,
            connection.transaction(readonly=True),
        ):
            with console.status("Verifying the audit trail ...") as status:
                async for verdict in audit.verify(connection):
                    status.update(f"Verifying the audit trail: {verdict[0]:,} rows hold ...")
        return verdict

    checked, broken = run_on_database(run(), settings.database_url)
    if broken is not None:
        console.print(
            f"[red]The audit trail is broken at row {broken.seq}: {broken.reason}.[/red] "
            f"{checked:,} rows before it hold."
        )
        raise typer.Exit(1)
    console.print(f"The audit trail holds: {checked:,} rows, every hash chained.")
