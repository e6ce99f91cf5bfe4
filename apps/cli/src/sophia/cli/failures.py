"""What a command says when its input or an engine fails it: one line and a non-zero exit, never a
traceback. PostgreSQL's client loads in the commands that use it, not with the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from sophia.core.errors import SophiaError
from sophia.shared.urls import without_password

if TYPE_CHECKING:
    from sophia.database.pool import Connection

T = TypeVar("T")
errors = Console(stderr=True, highlight=False)


def say(line: str) -> None:
    """`line` in red on stderr, as is: brackets in it are text, not markup."""
    errors.print(line, style="red", markup=False, highlight=False, soft_wrap=True)


def run_on_database(
    main: Coroutine[Any, Any, T], database_url: str | None, *, nats_url: str | None = None
) -> T:
    """`asyncio.run(main)`; PostgreSQL unreachable, refusing the login or a value, or not migrated
    (or, for a command that also uses NATS, NATS failing) exits 1 with one line saying so and
    naming the database, and NATS where given (without their passwords)."""
    from sophia.database.pool import POSTGRES_ERRORS, not_migrated

    try:
        return asyncio.run(main)
    except SophiaError as error:
        reason = error.detail
    except POSTGRES_ERRORS as error:
        reason = f"PostgreSQL refused: {error}"
        if not_migrated(error):
            reason += "; is the database migrated? Run `sophia migrate`"
    where = f"database {without_password(database_url or '')}"
    if nats_url:
        where += f", NATS {without_password(nats_url)}"
    say(f"{reason.rstrip('.')} ({where}).")
    raise typer.Exit(1)


def with_connection(call: Callable[[Connection], Awaitable[T]]) -> T:
    """`call(connection)` on the catalog's database, opened for it; failures as `run_on_database`."""
    from sophia.cli.endpoints import resolve_settings
    from sophia.database import Database

    settings = resolve_settings()

    async def run() -> T:
        async with Database(settings) as database, database.connection() as connection:
            return await call(connection)

    return run_on_database(run(), settings.database_url)


def settings_error(error: ValidationError) -> str:
    """A settings variable that does not parse, as one line: the variables and what is wrong with
    each (not their values: one may be a secret)."""
    problems = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        where = "_".join(str(part) for part in problem["loc"]).upper()
        problems.append(f"SOPHIA_{where}: {message}" if where else message)
    return "Invalid settings: " + "; ".join(problems) + "."
