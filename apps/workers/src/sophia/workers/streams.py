"""Every stream the workers use, checked at start: a limit JetStream cannot hold stops the process
with an error that names the knob, instead of every publish answering 503 for ever."""

from __future__ import annotations

from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.events.dead_letter import dead_letter_spec
from sophia.events.streams import StreamSpec, StreamStorageRefused, ensure_streams, stream_specs
from sophia.shared.logging import get_logger
from sophia.shared.settings import Settings
from sophia.workers.jobs import jobs_stream

log = get_logger(__name__)


def all_streams(settings: Settings) -> list[StreamSpec]:
    """The event streams, the jobs work queue and the dead letters."""
    return [*stream_specs(settings).values(), jobs_stream(settings), dead_letter_spec(settings)]


async def check_streams(settings: Settings, nats: NatsConnection) -> None:
    """Create or update every stream now. `StreamStorageRefused` is fatal; NATS being away is not
    (each worker waits for it and creates its streams then)."""
    try:
        await ensure_streams(await nats.jetstream(), all_streams(settings))
    except StreamStorageRefused:
        raise
    except NATS_FAILURES as error:
        log.warning("streams_not_checked", error=type(error).__name__)
