"""`sophia dlq`: list, show and replay the events stream processors gave up on.

NATS and the dead-letter stream's code are imported by the commands that use them, not with the
CLI: every `sophia` command would otherwise wait for them to load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sophia.cli.endpoints import resolve_settings
from sophia.core.errors import Invalid, NotFound, Unavailable
from sophia.events.codec import unpack
from sophia.shared.urls import without_password

if TYPE_CHECKING:
    from sophia.events.connection import NatsConnection
    from sophia.events.dead_letter import DeadLetter

app = typer.Typer(help="Dead letters: events a stream processor could not process.", no_args_is_help=True)
console = Console()

T = TypeVar("T")
MAX_SEQUENCE = 2**64 - 1  # a JetStream sequence is an unsigned 64-bit number


def _with_nats(call: Callable[[NatsConnection, str], Awaitable[T]]) -> T:
    """`call(nats, dead-letter stream)`; a missing letter or an unreachable NATS exits 1 with a line."""
    from sophia.events.connection import NatsConnection
    from sophia.events.dead_letter import dead_letter_spec

    settings = resolve_settings(needs="nats_url")  # dead letters live in NATS alone
    url, stream = settings.nats_url or "", dead_letter_spec(settings).name

    async def run() -> T:
        async with NatsConnection(url, settings.engine_timeout_s) as nats:
            return await call(nats, stream)

    try:
        return asyncio.run(run())
    except (NotFound, Invalid) as error:
        console.print(error.detail, style="red", markup=False, highlight=False)
    except Unavailable as error:
        console.print(f"[red]{error.detail} ({without_password(url)}).[/red]")
    raise typer.Exit(1)


@app.command("list")
def list_command(
    limit: int = typer.Option(50, "--limit", min=1, help="How many, oldest first."),
) -> None:
    """The oldest dead letters: where each came from and why it failed."""
    from sophia.events.dead_letter import list_dead_letters

    letters = _with_nats(lambda nats, stream: list_dead_letters(nats, stream, limit))
    if not letters:
        console.print("No dead letters.")
        return
    table = Table("seq", "dead at", "consumer", "subject", "deliveries", "error")
    for letter in letters:
        table.add_row(  # text, not markup: an error message may quote the event's data
            str(letter.sequence),
            f"{letter.dead_at:%Y-%m-%d %H:%M:%S}" if letter.dead_at else "",
            Text(letter.consumer),
            Text(letter.subject),
            str(letter.deliveries),
            Text(f"{letter.error_type}: {letter.error}"),
        )
    console.print(table)


@app.command("show")
def show_command(
    sequence: int = typer.Argument(
        ..., min=1, max=MAX_SEQUENCE, help="Its sequence (from `sophia dlq list`)."
    ),
) -> None:
    """One dead letter in full: origin, error, headers and the event itself."""
    from sophia.events.dead_letter import show_dead_letter

    letter = _with_nats(lambda nats, stream: show_dead_letter(nats, stream, sequence))
    _print_letter(letter)


@app.command("replay")
def replay_command(
    sequence: int = typer.Argument(
        ..., min=1, max=MAX_SEQUENCE, help="Its sequence (from `sophia dlq list`)."
    ),
) -> None:
    """Put a dead letter back on its original subject (its stream's consumers see it again); delete it."""
    from sophia.events.dead_letter import replay

    with console.status(f"Replaying dead letter {sequence} ..."):
        letter = _with_nats(lambda nats, stream: replay(nats, stream, sequence))
    console.print(
        f"Replayed dead letter {sequence} to {letter.subject} (stream {letter.stream}); "
        f"its consumers will process it again (it failed in {letter.consumer}).",
        markup=False,
    )


def _print_letter(letter: DeadLetter) -> None:
    dead_at = f"{letter.dead_at:%Y-%m-%d %H:%M:%S} UTC" if letter.dead_at else "unknown"
    console.print(f"[bold]Dead letter {letter.sequence}[/bold] (filed {dead_at})")
    console.print(f"  consumer:   {letter.consumer}", markup=False)
    console.print(
        f"  from:       {letter.stream} #{letter.original_sequence}, subject {letter.subject}", markup=False
    )
    console.print(f"  deliveries: {letter.deliveries}")
    console.print(f"  error:      {letter.error_type}: {letter.error}", markup=False)
    for name, value in letter.headers.items():
        console.print(f"  header:     {name}: {value}", markup=False)
    lines = unpack(letter.data)  # a message may carry several events, one a line
    if len(lines) > 1:
        console.print(f"  events:     {len(lines)}")
    for line in lines:
        try:
            body = orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            body = repr(line)
        console.print(body, markup=False, highlight=False)
