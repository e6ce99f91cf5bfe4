"""The outbox relay: catalog events from `sophia_core.outbox` to JetStream, each once.

A batch is claimed `FOR UPDATE SKIP LOCKED`, so several relays share the backlog without sending
an event twice. The batch goes out through the events API's publisher (`EventPublisher.publish_to`):
the events of one subject packed several to a message, one atomic batch a stream, each message
with a `Nats-Msg-Id` made of its events' ids (which the outbox ids make): a relay that dies between
JetStream's ack and its own delete sends the same rows again, packed alike, and JetStream drops the
copy. So that a retry packs alike, a relay whose publish of a stream's rows is not known to be
settled (it failed, and may still reach JetStream from nats-py's reconnect buffer; or the delete or
the commit after it failed) sends that stream's rows up to the last one it held, none newer, first.
A stream's rows are deleted only once JetStream has acknowledged all of them, in the transaction
that claimed them; a stream that failed keeps its rows for the next round. What can still store an
event twice: a relay that dies and one that takes its rows with newer ones, or a row committed late
with an older id; the consumers' sinks are idempotent.

The relay sleeps until a trigger's NOTIFY wakes it (a dedicated connection LISTENs), and polls
every `SOPHIA_OUTBOX_POLL_S` in case a notification was missed. NATS down: publishing fails, rows
stay, the relay backs off (with jitter) and catches up when NATS returns; writes never wait on it.

Order: events of one key keep their order with one relay (its batches go out in id order on one
connection). Several relays running at once trade that for availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from types import TracebackType

from sophia.core.errors import Unavailable
from sophia.core.event_types import EVENT_TYPES
from sophia.core.events import Envelope, uuid7
from sophia.database import Database, outbox
from sophia.database.listener import Listener
from sophia.database.outbox import OutboxEvent
from sophia.events.connection import NATS_FAILURES, NatsConnection
from sophia.events.publisher import EventPublisher
from sophia.events.streams import StreamSpec
from sophia.shared.logging import get_logger
from sophia.shared.resilience import backoff_delays, honour_cancellation
from sophia.workers.metrics import OUTBOX_DEPTH, RELAY_BATCH_SECONDS, RELAY_FAILURES, RELAYED

DEPTH_OBSERVE_INTERVAL_S = 1.0

log = get_logger(__name__)

SOURCE = "catalog"
PUBLISH_FAILURES = NATS_FAILURES


def envelope_of(event: OutboxEvent) -> Envelope:
    """The event as it goes on the bus; the same bytes every time the row is published (its id
    is a UUIDv7 made of the row's time and outbox id)."""
    event_type = EVENT_TYPES.get(event.event_type)
    return Envelope(
        id=str(uuid7(int(event.created_at.timestamp() * 1000), event.id)),
        type=event.event_type,
        schema_version=event_type.schema_version if event_type else 1,
        occurred_at=event.created_at,
        source=SOURCE,
        key=event.key,
        payload=event.payload,
    )


class OutboxRelay:
    """`async with OutboxRelay(...) as relay: await relay.run()`; or `relay_once()` for one batch."""

    def __init__(
        self,
        database: Database,
        nats: NatsConnection,
        streams: Mapping[str, StreamSpec],
        *,
        batch: int = 500,
        poll_s: float = 1.0,
        gather_s: float = 0.0,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.database = database
        self.nats = nats
        self.streams = streams
        self.batch = batch
        self.poll_s = poll_s
        self.gather_s = gather_s
        """Woken, the next batch begins no sooner than this after the last one began: at 100 writes
        a second each woke the relay, a transaction and a publish (and every consumer after them)
        for one event (docs/streams.md)."""
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self._listener = Listener(
            database.dsn or "",
            outbox.NOTIFY_CHANNEL,
            self.wake.set,
            timeout_s=database.settings.engine_timeout_s,
        )
        self._depth_observed_at = -DEPTH_OBSERVE_INTERVAL_S
        # Never refused up front for a stream's fill: the rows wait in the outbox, and a full
        # stream refuses the batch itself (the relay then backs off).
        self.publisher = EventPublisher(nats, streams, refuse_at=float("inf"), atomic=False)
        self._unsettled: dict[str, int] = {}
        """Per topic, the last outbox id of a publish not known to be settled (acknowledged and its
        rows deleted): the next batch of that topic stops there."""
        self.more_waiting = False
        """Whether the last batch left rows for the next one at once."""

    async def __aenter__(self) -> OutboxRelay:
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._unlisten()

    async def _listen(self) -> None:
        """Woken by the outbox's NOTIFY; without it (PostgreSQL away) the relay polls."""
        failure = await self._listener.open()
        if failure is not None:
            log.warning("outbox_listen_failed", error=failure.__name__)

    async def _unlisten(self) -> None:
        await self._listener.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until `stop` is set (the batch in flight finishes first) or cancelled: drain, wait
        for a wake-up or the poll, again."""
        stop = stop or asyncio.Event()
        failures = 0
        delays = backoff_delays(12, 0.1, self.backoff_max_s)
        loop = asyncio.get_running_loop()
        # `stop` wakes the relay too, through one task for the whole run: waiting on both with a
        # task for each at every wake-up cost the workers more than the batch of one write it
        # woke for (docs/streams.md).
        waker = asyncio.create_task(_set_when(stop, self.wake))
        try:
            while not stop.is_set():
                honour_cancellation()
                self.wake.clear()
                try:
                    began = loop.time()
                    relayed = await self.relay_once()
                except PUBLISH_FAILURES as error:
                    RELAY_FAILURES.labels(type(error).__name__).inc()
                    with contextlib.suppress(Unavailable):
                        await self._observe_depth()
                    delay = delays[min(failures, len(delays) - 1)]
                    failures += 1
                    log.warning("outbox_relay_failed", error=type(error).__name__, retry_s=round(delay, 3))
                    await _set_within(stop, delay)
                    continue
                failures = 0
                if relayed and self.more_waiting:
                    continue  # a full batch, or rows held back: more is waiting
                await self._listen()  # back after a Postgres outage
                await _set_within(self.wake, self.poll_s)
                if (gather := began + self.gather_s - loop.time()) > 0:  # writes close together: one batch
                    await _set_within(stop, gather)
        finally:
            waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waker

    async def relay_once(self) -> int:
        """Publish one batch and delete what JetStream acknowledged; the number published.

        Raises when something could not be published (after deleting what could)."""
        started = time.perf_counter()
        async with self.database.connection() as connection, connection.transaction():
            claimed = await outbox.claim(connection, self.batch)
            self.more_waiting = len(claimed) >= self.batch
            if not claimed:
                OUTBOX_DEPTH.set(0)
                return 0
            by_topic: dict[str, list[OutboxEvent]] = {}
            for event in claimed:
                by_topic.setdefault(event.topic, []).append(event)
            published: list[OutboxEvent] = []
            failed: list[BaseException] = []
            for topic, rows in by_topic.items():
                held = self._as_before(topic, rows)
                self.more_waiting |= len(held) < len(rows)
                rows = held
                # Until this transaction commits, a copy of these messages may be in JetStream.
                self._unsettled[topic] = rows[-1].id
                try:
                    await self.publisher.publish_to(topic, [envelope_of(event) for event in rows])
                except PUBLISH_FAILURES as error:
                    failed.append(error)
                else:
                    published += rows
            await outbox.delete(connection, [event.id for event in published])
        for topic in {event.topic for event in published}:
            self._unsettled.pop(topic, None)
        for event in published:
            RELAYED.labels(event.topic).inc()
        RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        if failed:
            await self._observe_depth()
            raise failed[0]
        if self.more_waiting:
            await self._observe_depth()
        else:
            OUTBOX_DEPTH.set(0)
        return len(published)

    def _as_before(self, topic: str, rows: list[OutboxEvent]) -> list[OutboxEvent]:
        """`rows` of `topic`, or, when its last publish is not known to have failed cleanly (it
        raised, or the transaction did not commit), only those up to that publish's last row: they
        pack into the same messages, and whatever copy of them reached JetStream is a duplicate.
        Newer rows wait for the next batch."""
        through = self._unsettled.get(topic)
        if through is None:
            return rows
        again = [event for event in rows if event.id <= through]
        return again or rows  # none left (another relay took them): nothing to match

    async def _observe_depth(self) -> None:
        """The backlog gauge, at most once a second: its cost stays the same whatever the backlog."""
        now = time.monotonic()
        if now - self._depth_observed_at < DEPTH_OBSERVE_INTERVAL_S:
            return
        self._depth_observed_at = now
        async with self.database.connection() as connection:
            OUTBOX_DEPTH.set((await outbox.depth(connection)).events)


async def _set_when(event: asyncio.Event, then: asyncio.Event) -> None:
    await event.wait()
    then.set()


async def _set_within(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` have passed. (Python 3.11's `asyncio.timeout` can swallow
    a cancellation that arrives as it expires: the loop above honours one at each turn.)"""
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
