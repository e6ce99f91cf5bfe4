"""`sophia tail CHANNEL`: a channel's live events in the terminal, reconnecting and resuming.

It subscribes to the real-time service (the running stack's, or `--url`) with a key (`--key`,
`SOPHIA_KEY`, or the running stack's dev key), prints each publication as it comes, and keeps the
position of the last one: after a dropped connection it reconnects with backoff and resumes from
there, so nothing is missed or printed twice. A resume the service cannot honour (history gone,
the stream made again) is said on stderr, and the tail goes on from the live position.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.text import Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from sophia.cli import endpoints
from sophia.core.documents import text_problem
from sophia.shared.resilience import backoff_delays
from sophia.shared.settings import Settings

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


NEVER_CONNECTED_TRIES = 6
"""Tries (with backoff, a few seconds) before a tail that never connected gives up; once connected,
it reconnects for as long as it runs."""


class TailRefused(Exception):
    """The service will not serve this tail (a bad key, an unknown or forbidden channel)."""


async def tail(
    url: str,
    key: str,
    channel: str,
    since: dict[str, Any] | None,
    show: Callable[[dict[str, Any]], None],
    *,
    stop: asyncio.Event,
    max_events: int | None = None,
    reconnect_max_s: float = 5.0,
) -> dict[str, Any] | None:
    """Show each publication of `channel` until `stop` (or `max_events`); the last position."""
    position = since
    shown = 0
    delays = backoff_delays(30, 0.1, reconnect_max_s)
    failures = 0
    connected = False
    while not stop.is_set():
        try:
            async with connect(
                url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5
            ) as ws:
                request: dict[str, Any] = {"op": "subscribe", "id": 1, "channel": channel}
                if position is not None:
                    request["since"] = position
                await ws.send(orjson.dumps(request).decode())
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if answer.get("type") == "error":
                    raise TailRefused(f"{answer.get('code')}: {answer.get('detail')}")
                if answer.get("recovered") is False:
                    errors.print(f"[yellow]{answer.get('reason')}[/yellow]")
                if not isinstance(answer.get("position"), dict):
                    raise TailRefused(f"{url} answered as no real-time service does: {str(answer)[:100]}")
                if position is None or answer.get("recovered") is False:
                    position = dict(answer["position"])
                failures = 0
                connected = True
                async for data in ws:
                    frame = orjson.loads(data)
                    if frame.get("type") != "publication":
                        continue
                    show(frame)
                    position = dict(frame["position"])
                    shown += 1
                    if max_events is not None and shown >= max_events:
                        return position
                    if stop.is_set():
                        return position
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status in (401, 403):
                raise TailRefused(f"the service refused the key ({status})") from None
            if status == 404:
                raise TailRefused(f"{url}: no real-time service at that path (404)") from None
            errors.print(f"[yellow]refused ({status}); retrying[/yellow]")
        except InvalidHandshake as odd:  # not a WebSocket server: asking again will not make it one
            raise TailRefused(f"{url} is no WebSocket server ({odd})") from None
        except (OSError, ConnectionClosed, TimeoutError) as lost:
            if not connected and failures >= NEVER_CONNECTED_TRIES - 1:
                raise TailRefused(f"could not connect to {url} ({type(lost).__name__})") from None
            errors.print(f"[yellow]connection lost ({type(lost).__name__}); reconnecting[/yellow]")
        delay = delays[min(failures, len(delays) - 1)]
        failures += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return position


def parse_since(text: str | None) -> dict[str, Any] | None:
    """`EPOCH:SEQ` (as the tail prints it) as a position."""
    if text is None:
        return None
    epoch, _, seq = text.partition(":")
    # ASCII digits only (str.isdigit takes '²', which int() does not), and a position's size
    if not epoch or not (seq.isascii() and seq.isdigit() and len(seq) <= 19) or not _text(epoch):
        raise typer.BadParameter("--since is EPOCH:SEQ, as `sophia tail` prints positions.")
    return {"epoch": epoch, "seq": int(seq)}


def _text(value: str) -> bool:
    """Whether `value` can be sent (a shell may hand over bytes that are no UTF-8)."""
    return text_problem(value) is None


def _line(frame: dict[str, Any]) -> None:
    event, position = frame["event"], frame["position"]
    where = f"{position['epoch']}:{position['seq']}"
    payload = orjson.dumps(event.get("payload")).decode()
    # Text, not markup: brackets in a payload are data
    console.print(
        Text.assemble((where, "dim"), " ", (str(event.get("type")), "bold"), f" {event.get('key')} {payload}")
    )


def command(
    channel: str = typer.Argument(
        ..., help="records, records:<source_system>[:<kind>], deals, ml-predictions, ..."
    ),
    since: str | None = typer.Option(None, "--since", help="Resume after this position (EPOCH:SEQ)."),
    url: str | None = typer.Option(
        None, "--url", help="The service's ws:// URL (default: the running stack's)."
    ),
    key: str | None = typer.Option(
        None, "--key", envvar="SOPHIA_KEY", help="An API key (default: the stack's dev key)."
    ),
    json_lines: bool = typer.Option(False, "--json", help="Print each publication as one JSON line."),
    max_events: int | None = typer.Option(None, "--max-events", min=1, help="Stop after this many."),
) -> None:
    """Print a channel's events as they happen; reconnect and resume after a drop (Ctrl-C stops)."""
    running = endpoints.read(Settings()) or {}
    url = url or running.get("realtime")
    key = key or running.get("api_key")
    if not url or not key:
        raise SystemExit("No real-time service: start the stack with `make up`, or give --url and --key.")
    try:
        parse_uri(url)
    except (InvalidURI, ValueError):  # ValueError: a port past 65535, a broken IPv6 address
        raise typer.BadParameter(
            "must be a ws:// or wss:// URL (the real-time service's)", param_hint="--url"
        ) from None
    if not (key.isascii() and key.isprintable() and " " not in key):
        raise typer.BadParameter("must be an API key: printable ASCII, no spaces", param_hint="--key")
    if not _text(channel):
        raise typer.BadParameter("is not text (bytes that are no UTF-8)", param_hint="CHANNEL")
    position = parse_since(since)
    show = (lambda frame: print(orjson.dumps(frame).decode(), flush=True)) if json_lines else _line

    async def run() -> dict[str, Any] | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await tail(url, key, channel, position, show, stop=stop, max_events=max_events)

    try:
        last = asyncio.run(run())
    except TailRefused as refused:
        errors.print(f"[red]sophia tail: {refused}[/red]")
        raise SystemExit(2) from None
    if last is not None:
        errors.print(f"last position: {last['epoch']}:{last['seq']}  (resume with --since)")
