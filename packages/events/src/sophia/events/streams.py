"""The JetStream streams Sophia runs on, as data, created or updated idempotently at start.

Each stream takes `<stream>.<partition>.<event type>` subjects. The partition is a stable hash of
the event's key (blake2b, never Python's per-process `hash()`) modulo the stream's partitions, so
every event of one key lands on one subject, in order, and consumers can split the partitions
between them. Streams refuse new messages when full (`discard: new`): a publisher sees the error
and pushes back on its caller; nothing already accepted is dropped to make room.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from sophia.core.errors import Unavailable
from sophia.shared.logging import get_logger
from sophia.shared.settings import Settings

log = get_logger(__name__)

STREAM_NAMES = ("records", "user-events", "system-events", "ml-predictions", "audit-logs")
INSUFFICIENT_STORAGE = 10047
"""JetStream's error code when it cannot reserve a stream's `max_bytes` in its store."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream: its name (also its subject prefix), partitions and limits."""

    name: str
    """What NATS calls it: `SOPHIA_EVENTS_STREAM_PREFIX` and one of `STREAM_NAMES`."""
    partitions: int = 10
    max_age_s: float = 7 * 24 * 3600.0
    max_bytes: int = 1024**3
    replicas: int = 1
    duplicate_window_s: float = 120.0
    """How long JetStream remembers a `Nats-Msg-Id`: a re-publish within it is dropped as a duplicate."""

    def subject(self, key: str, event_type: str) -> str:
        return f"{self.name}.{partition_of(key, self.partitions)}.{event_type}"

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=[f"{self.name}.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            discard=DiscardPolicy.NEW,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window_s,
            allow_atomic=True,  # all-or-nothing batches: how the events API publishes (nats-server 2.12+)
        )


@dataclass(frozen=True, slots=True)
class WorkQueueSpec(StreamSpec):
    """A stream whose messages are gone once acked: each is taken by one consumer (a job queue)."""

    def config(self) -> StreamConfig:
        config = StreamSpec.config(self)
        config.retention = RetentionPolicy.WORK_QUEUE
        return config


class StreamStorageRefused(Unavailable):
    """JetStream cannot reserve a stream's `max_bytes`: an operator must lower the limit or give
    NATS more storage. Retrying does not help, so it says exactly which knob to turn."""

    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(
            f"JetStream cannot reserve {spec.max_bytes:,} bytes for the {spec.name} stream "
            "(insufficient storage). Lower SOPHIA_EVENTS_MAX_BYTES, or give NATS more storage "
            "(its jetstream max_file_store, or disk).",
            retry_after_s=60,
        )


@functools.lru_cache(maxsize=8_192)
def partition_of(key: str, partitions: int) -> int:
    """The partition of `key`: the same in every process and every run. Remembered for the most
    recent keys: a hash is 0.5 µs, and a busy key is published again and again. Keys are the
    clients' (up to 512 characters), so the memory is bounded by few entries: 5 MB at most."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def stream_specs(settings: Settings) -> dict[str, StreamSpec]:
    """Every stream by its unprefixed name (the outbox's topic), with the settings' limits."""
    return {
        name: StreamSpec(
            settings.events_stream_prefix + name,
            partitions=settings.events_partitions,
            max_age_s=settings.events_max_age_s,
            max_bytes=settings.events_max_bytes,
            replicas=settings.events_replicas,
        )
        for name in STREAM_NAMES
    }


async def ensure_streams(js: JetStreamContext, specs: Iterable[StreamSpec]) -> list[str]:
    """Create the streams that are missing and bring the others to their spec; the names changed."""
    changed = []
    for spec in specs:
        try:
            if await _ensure(js, spec):
                changed.append(spec.name)
        except APIError as error:
            if error.err_code != INSUFFICIENT_STORAGE:
                raise
            refused = StreamStorageRefused(spec)
            log.error("stream_storage_refused", stream=spec.name, detail=refused.detail)
            raise refused from error
    return changed


async def _ensure(js: JetStreamContext, spec: StreamSpec) -> bool:
    wanted = spec.config()
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("stream_created", stream=spec.name, replicas=spec.replicas)
        return True
    if _differs(info.config, wanted):
        await js.update_stream(wanted)
        log.info("stream_updated", stream=spec.name)
        return True
    return False


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    fields = (
        "subjects",
        "max_age",
        "max_bytes",
        "discard",
        "num_replicas",
        "duplicate_window",
        "allow_atomic",
    )
    return any(getattr(current, field) != getattr(wanted, field) for field in fields)
