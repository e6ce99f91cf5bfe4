"""`sophia jobs`: submit background jobs and ask how they stand.

PostgreSQL, NATS and the job queue are imported when a command runs, not with the CLI: every
`sophia` command would otherwise wait for them to load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import orjson
import typer
from rich.console import Console

from sophia.cli.endpoints import resolve_settings
from sophia.core.errors import NotFound, Unavailable

if TYPE_CHECKING:
    from sophia.database.jobs import Job
    from sophia.workers.jobs import JobQueue

app = typer.Typer(help="Background jobs: view refreshes, bulk re-processing.", no_args_is_help=True)
console = Console()

T = TypeVar("T")


def _with_queue(call: Callable[[JobQueue], Awaitable[T]], *, needs_nats: bool = False) -> T:
    """`call(queue)`; an unknown job or an unreachable engine exits 1 with one line."""
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

    try:
        return asyncio.run(run())
    except (NotFound, Unavailable) as error:
        console.print(error.detail, style="red", markup=False, highlight=False)
    raise typer.Exit(1)


def _param(text: str) -> tuple[str, Any]:
    """`k=v`: v as JSON where it is JSON (`5`, `true`, `"x"`), else as text."""
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise typer.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--param")
    try:
        return name, orjson.loads(value)
    except orjson.JSONDecodeError:
        return name, value


@app.command("submit")
def submit_command(
    kind: str = typer.Argument(..., help="The job kind, e.g. refresh_active_deals, reprocess_records."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE (JSON or text); repeatable."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key: the same key, the same job."),
) -> None:
    """Queue a job for the workers; with --key, submitting again finds the first job."""
    params = dict(_param(text) for text in param)
    job, created = _with_queue(lambda queue: queue.submit(kind, params, idempotency_key=key), needs_nats=True)
    if created:
        console.print(f"Submitted job {job.id} ({job.kind}).", highlight=False)
    else:
        console.print(f"Job {job.id} already has key {key!r}: {job.status}.", highlight=False)


@app.command("status")
def status_command(
    job_id: str = typer.Argument(..., help="The job's id (from `sophia jobs submit`)."),
) -> None:
    """Where a job stands: status, attempts, result or error."""
    try:
        parsed = UUID(job_id)
    except ValueError:
        console.print(f"[red]Not a job id: {job_id!r}.[/red]", highlight=False)
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
