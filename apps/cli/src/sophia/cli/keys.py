"""`sophia keys`: create, list and revoke API keys. PostgreSQL's client loads in the commands, not
with the CLI."""

from __future__ import annotations

import re
import sys

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sophia.cli.failures import with_connection

app = typer.Typer(help="API keys (stored hashed; the secret is shown once).", no_args_is_help=True)
console = Console()

MAX_NAME_CHARS = 200
PREFIX = re.compile(r"[0-9a-f]{8}")


def _check_name(name: str) -> str:
    """A label to show in `keys list`: printable text, not too long."""
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        raise typer.BadParameter(f"must be 1 to {MAX_NAME_CHARS} characters")
    if not name.isprintable():  # nor a zero-width, a line separator or a soft hyphen (Cf, Zl, Zp)
        raise typer.BadParameter(
            "must be printable text (no control or invisible characters, NUL or undecodable bytes)"
        )
    return name


@app.command()
def create(
    scope: list[str] = typer.Option(..., help="read, write or admin (each includes the ones before)."),
    name: str = typer.Option(
        "cli",
        callback=_check_name,
        help=f"A label to recognise the key by (at most {MAX_NAME_CHARS} characters).",
    ),
) -> None:
    """Create a key and print its secret (once)."""
    from sophia.database import keys as key_store

    if len(scope) != 1:  # of two, the last won: `--scope read --scope admin` made an admin key
        raise typer.BadParameter("give it once", param_hint="--scope")
    [chosen] = scope
    if chosen not in key_store.SCOPES:
        raise typer.BadParameter(f"must be one of {', '.join(key_store.SCOPES)}", param_hint="--scope")
    if sys.stdout is None:  # started with its output closed: the secret would go nowhere
        raise SystemExit("sophia keys create: no output to print the secret to; no key was made.")

    def show(secret: str) -> None:  # before the key is committed: unprinted, it is not made
        sys.stdout.write(secret + "\n")
        sys.stdout.flush()

    try:
        with_connection(lambda connection: key_store.create(connection, name, chosen, show=show))
    except OSError as error:
        raise SystemExit(
            f"sophia keys create: could not print the secret ({error.strerror}); no key was made."
        ) from None


@app.command("list")
def list_keys() -> None:
    """List keys (prefix, name, scope, state); secrets are never shown again."""
    from sophia.database import keys as key_store

    table = Table("prefix", "name", "scope", "created", "revoked")
    for key in with_connection(key_store.list_all):
        table.add_row(
            key.prefix,
            Text(key.name),  # text, not markup: a name is whatever its creator typed
            key.scope,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    console.print(table)


@app.command()
def revoke(
    prefix: str = typer.Argument(..., help="The key's prefix (from `sophia keys list`)."),
) -> None:
    """Revoke a key; API processes stop accepting it within a second."""
    from sophia.database import keys as key_store

    if not PREFIX.fullmatch(prefix):
        raise typer.BadParameter(
            "must be a key's prefix: 8 hex digits, as `sophia keys list` shows it", param_hint="PREFIX"
        )
    if not with_connection(lambda connection: key_store.revoke(connection, prefix)):
        console.print(f"[red]No active key with prefix {prefix}[/red]")
        raise typer.Exit(1)
    console.print(f"Revoked {prefix}")
