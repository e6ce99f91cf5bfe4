"""What the CLI tests read of a command's run: what it said, that it failed on purpose, and a value
of the database it acted on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from typer.testing import CliRunner, Result


def said(result: Result) -> str:
    """What the command printed, and the message a `SystemExit("...")` carries, on one line (as
    typer's error box wraps it: borders and line breaks out)."""
    text = result.output + (str(result.exception) if isinstance(result.exception, SystemExit) else "")
    return " ".join(text.replace("│", " ").split())


def assert_no_traceback(result: Result) -> None:
    """A failure the command meant: its own exit, not an exception escaping it."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def fetchval(database_url: str, query: str, *args: object) -> object:
    """One value of `query`, on a connection of its own."""

    async def run() -> object:
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def train_classifier(data_dir: Path, *arguments: str) -> Result:
    """`sophia ml train-classifier` with `data_dir`'s models, on one thread (as the tests' encoder)."""
    from sophia.cli.main import app

    environment = {"SOPHIA_DATA_DIR": str(data_dir), "SOPHIA_ML_THREADS": "1"}
    return CliRunner().invoke(app, ["ml", "train-classifier", *arguments], env=environment)


def invoke(env: dict[str, str], *args: str) -> Result:
    """`sophia ARGS` in-process with `env` for its environment."""
    from sophia.cli.main import app

    return CliRunner().invoke(app, list(args), env=env)
