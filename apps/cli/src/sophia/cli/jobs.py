"""`sophia jobs`: submit background jobs and ask how they stand.

PostgreSQL, NATS and the job queue are imported when a command runs, not with the CLI: every
`sophia` command would otherwise wait for them to load."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import orjson
import typer
from rich.console import Console

from sophia.cli.endpoints import resolve_settings
from sophia.cli.failures import run_on_database
from sophia.core.documents import document_problem, text_problem

if TYPE_CHECKING:
    from sophia.database.jobs import Job
    from sophia.workers.jobs import JobQueue

app = typer.Typer(help="Background jobs: view refreshes, bulk re-processing.", no_args_is_help=True)
console = Console()

T = TypeVar("T")


def job_kinds() -> tuple[str, ...]:
    """The kinds the workers run (any other would fail there, after being queued)."""
    from sophia.workers.jobs import (
        ANNOUNCE_ACTIVE_DEALS,
        REEMBED_RECORDS,
        REFRESH_ACTIVE_DEALS,
        REPROCESS_RECORDS,
    )

    return (REFRESH_ACTIVE_DEALS, ANNOUNCE_ACTIVE_DEALS, REPROCESS_RECORDS, REEMBED_RECORDS)


def _with_queue(call: Callable[[JobQueue], Awaitable[T]], *, needs_nats: bool = False) -> T:
    """`call(queue)`; an unknown job, an unreachable engine or one that refuses exits 1 with one line
    naming the database and NATS (`failures.run_on_database`)."""
    from sophia.database import Database
    from sophia.events.connection import NatsConnection
    from sophia.workers.jobs import JobQueue, jobs_stream

    settings = resolve_settings()
    if needs_nats and not settings.nats_url:
        console.print("[red]No NATS: set SOPHIA_NATS_URL or start the stack with `make up`.[/red]")
        raise typer.Exit(1)

    async def run() -> T:
        async with (
            Database(settings) as database,
            NatsConnection(settings.nats_url or "", settings.engine_timeout_s) as nats,
        ):
            return await call(JobQueue(database, nats, jobs_stream(settings)))

    return run_on_database(run(), settings.database_url, nats_url=settings.nats_url)


class _OutOfRange(Exception):
    """A JSON number a job's params cannot hold: past 64 bits, or past a float (1e999)."""


def _int64(text: str) -> int:
    if len(text.lstrip("-")) > 20:  # past 64 bits whatever its digits (and past int()'s 4,300)
        raise _OutOfRange(text)
    number = int(text)
    if not -(2**63) <= number < 2**64:
        raise _OutOfRange(text)
    return number


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise _OutOfRange(text)
    return number


def _not_a_number(text: str) -> float:
    raise ValueError(text)  # NaN, Infinity: not JSON, so text


def _param(text: str) -> tuple[str, Any]:
    """`k=v`: v as JSON where it is JSON (`5`, `true`, `"x"`; integers exactly), else as text."""
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise typer.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--param")
    parsed: Any
    try:
        parsed = json.loads(value, parse_int=_int64, parse_float=_finite, parse_constant=_not_a_number)
    except _OutOfRange:
        raise typer.BadParameter(f"{name}: a number past 64 bits", param_hint="--param") from None
    except RecursionError:
        raise typer.BadParameter(f"{name}: nested too deeply", param_hint="--param") from None
    except ValueError:
        parsed = value
    # what PostgreSQL cannot hold in text or JSON: NUL and lone surrogates (undecodable bytes); no
    # depth bound here (json's own recursion limit answers above) and no NaN (read as text)
    if text_problem(name) or document_problem(parsed, max_depth=sys.maxsize):
        raise typer.BadParameter(f"{name}: NUL or undecodable bytes cannot be stored", param_hint="--param")
    return name, parsed


@app.command("submit")
def submit_command(
    kind: str = typer.Argument(..., help="The job kind, e.g. refresh_active_deals, reprocess_records."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE (JSON or text); repeatable."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key: the same key, the same job."),
) -> None:
    """Queue a job for the workers; with --key, submitting again finds the first job."""
    if kind not in job_kinds():
        raise typer.BadParameter(f"must be one of {', '.join(job_kinds())}", param_hint="KIND")
    if key is not None and (not key or text_problem(key)):
        raise typer.BadParameter("must be text without NUL or undecodable bytes", param_hint="--key")
    from sophia.database.jobs import IDEMPOTENCY_KEY_MAX_CHARS

    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise typer.BadParameter(f"at most {IDEMPOTENCY_KEY_MAX_CHARS} characters", param_hint="--key")
    pairs = [_param(text) for text in param]
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise typer.BadParameter(f"{twice} is given twice; give it once", param_hint="--param")
    params = dict(pairs)
    from sophia.workers.jobs import params_problem

    if (problem := params_problem(kind, params)) is not None:  # sure to fail: not queued
        raise typer.BadParameter(problem.rstrip("."), param_hint="--param")
    job, created = _with_queue(lambda queue: queue.submit(kind, params, idempotency_key=key), needs_nats=True)
    if created:
        console.print(f"Submitted job {job.id} ({job.kind}).", markup=False, highlight=False)
    else:
        console.print(f"Job {job.id} already has key {key!r}: {job.status}.", markup=False, highlight=False)


@app.command("status")
def status_command(
    job_id: str = typer.Argument(..., help="The job's id (from `sophia jobs submit`)."),
) -> None:
    """Where a job stands: status, attempts, result or error."""
    try:
        parsed = UUID(job_id)
    except ValueError:
        console.print(f"Not a job id: {job_id!r}.", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _print_job(_with_queue(lambda queue: queue.status(parsed)))


def _print_job(job: Job) -> None:
    def when(value: object) -> str:
        return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "-"

    lines = {
        "kind": job.kind,
        "status": job.status,
        "attempts": str(job.attempts),
        "key": job.idempotency_key or "-",
        "created": when(job.created_at),
        "not before": when(job.not_before),
        "started": when(job.started_at),
        "finished": when(job.finished_at),
        "params": orjson.dumps(job.params).decode(),
        "result": orjson.dumps(job.result).decode() if job.result is not None else "-",
        "error": job.error or "-",
    }
    console.print(f"[bold]Job {job.id}[/bold]", highlight=False)
    for name, value in lines.items():
        console.print(f"  {name + ':':<12}{value}", markup=False, highlight=False)
