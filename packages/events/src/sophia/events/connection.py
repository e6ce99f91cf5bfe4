"""The NATS connection a Sophia process shares; connects lazily so the API starts without NATS."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from sophia.core.errors import Unavailable
from sophia.shared.logging import get_logger
from sophia.shared.urls import without_password

NATS_FAILURES: tuple[type[BaseException], ...] = (NatsError, OSError, TimeoutError, Unavailable)
"""What a call to NATS raises when NATS is away, refuses, or a call times out: apps catch these,
never nats-py's own types."""

log = get_logger(__name__)

STATUS_AT = len(b"NATS/1.0")
"""Where a header block's version line has a space and a status, if it has one (`NATS/1.0 408`)."""
HEADERS_AT = len(b"NATS/1.0\r\n")
"""Where a header block's `Name: value` lines start, after its version line (no status on it)."""


class Delivered(Msg):
    """A message handed over directly (`DeliveringClient`), its headers parsed when first read:
    a stream consumer's sink reads the message's bytes, and only a dead letter its headers.
    Everything a `Msg` does works on it (ack, nak, metadata, headers); it is made only here, so
    `dataclasses.replace` of one is not supported, and it never equals a plain `Msg`."""

    def __init__(
        self, client: Client, sid: int, subject: str, reply: str, data: bytes, raw: bytes | None
    ) -> None:
        self._parsed: dict[str, str] | None
        super().__init__(_client=client, subject=subject, reply=reply, data=data, _sid=sid)  # headers=None
        self._raw = raw or None

    @property  # the dataclass field, read lazily
    def headers(self) -> dict[str, str] | None:
        if self._raw is not None:  # what nats-py's _process_headers makes of a block without a status
            self._parsed, self._raw = Client._parse_header_lines(self._raw[HEADERS_AT:]) or None, None
        return self._parsed

    @headers.setter
    def headers(self, value: dict[str, str] | None) -> None:
        self._raw, self._parsed = None, value


class DeliveringClient(Client):
    """nats-py's client, but every message of a subscription registered with `deliver_to` goes
    straight to a plain function, in the order it came, as a `Delivered` message: no header
    parsing for a stream message until they are read, no queue and no task switch a message,
    which were half of a consumer's CPU (docs/streams.md). JetStream's statuses (404, 408, 409:
    no ack subject) come the same way, their headers parsed by nats-py at once: a pull
    subscription counts its open requests by the order of messages and statuses."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Callable[[Msg], None]] = {}

    async def subscribe_direct(self, subject: str, deliver: Callable[[Msg], None]) -> Subscription:
        """Subscribe to `subject`, every message handed to `deliver` in the read loop: it must be
        quick and must not block. The route ends with the subscription."""
        subscription = await self.subscribe(subject)  # no callback: nothing takes nats-py's path
        self.deliver_to(subscription._id, deliver)
        return subscription

    def deliver_to(self, sid: int, deliver: Callable[[Msg], None]) -> None:
        """Hand subscription `sid`'s messages to `deliver` from now on."""
        self._direct[sid] = deliver

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)  # however nats-py drops a subscription, its route goes too
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:  # `headers` is None for a message without (nats-py's hint says bytes)
        deliver = self._direct.get(sid)
        if deliver is None or sid not in self._subs:  # nats-py's path drops what nobody wants
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        try:
            if reply and not (headers and headers[STATUS_AT : STATUS_AT + 1] == b" "):
                message = Delivered(self, sid, subject.decode(), reply.decode(), data, headers)
            else:  # a status (its line after the version), or no ack subject: nats-py's parse
                message = Delivered(self, sid, subject.decode(), reply.decode(), data, None)
                message.headers = await self._process_headers(headers)
            deliver(message)
        except Exception as error:  # as nats-py reports a callback's failure: the connection goes on
            try:
                await self._error_cb(error)
            except Exception:  # nats-py's read loop would end on it, and the connection hang
                log.exception("nats_deliver_failed", error=repr(error))


class NatsConnection:
    """Owns one nats-py client; `ping` (re)connects if needed and checks JetStream answers.

    nats-py reconnects in the background while the server is away. Its default error callback logs
    a full traceback on every attempt (twice a second); here the first error after a connection
    is a warning line and the rest are debug. A client is closed whole or not dropped at all:
    closing is shielded from the caller's cancellation (a readiness probe timing out), since a
    client dropped half-closed keeps reconnecting for the life of the process."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client: DeliveringClient | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._error_logged = False

    async def _on_error(self, client: Client, error: Exception) -> None:
        if client.is_closed:
            # nats-py's reconnect loop can outlive `close()` (its cancellation is swallowed
            # inside a connect attempt); it calls this after every failed attempt, so this ends it.
            raise asyncio.CancelledError
        if self._error_logged:
            log.debug("nats_error", url=without_password(self.url), error=repr(error))
        else:
            self._error_logged = True
            log.warning("nats_error", url=without_password(self.url), error=repr(error))

    async def _on_disconnected(self, client: Client) -> None:
        if client.is_closed:  # closed on purpose: nothing to warn about
            log.debug("nats_closed", url=without_password(self.url))
        else:
            log.warning("nats_disconnected", url=without_password(self.url))

    async def _on_reconnected(self) -> None:
        self._error_logged = False
        log.info("nats_reconnected", url=without_password(self.url))

    async def _connected(self) -> Client:
        async with self._lock:
            if self.client is None or self.client.is_closed:
                client = DeliveringClient()
                timing: dict[str, Any] = {  # seconds; nats-py takes floats though it hints int
                    "connect_timeout": self.timeout_s,
                    "reconnect_time_wait": 0.5,
                }
                await client.connect(
                    servers=[url.strip() for url in self.url.split(",") if url.strip()],  # a cluster
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    name="sophia",
                    error_cb=functools.partial(self._on_error, client),
                    disconnected_cb=functools.partial(self._on_disconnected, client),
                    reconnected_cb=self._on_reconnected,
                    **timing,
                )
                self.client = client
                self._error_logged = False
            return self.client

    async def jetstream(self) -> JetStreamContext:
        """JetStream on the shared client, connecting first if needed; `Unavailable` without NATS."""
        try:
            async with asyncio.timeout(self.timeout_s):
                client = await self._connected()
        except (NatsError, OSError, TimeoutError) as error:
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error
        return client.jetstream(timeout=self.timeout_s)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                client = await self._connected()
                await client.jetstream(timeout=self.timeout_s).account_info()
        except (NatsError, OSError, TimeoutError) as error:
            if self.client is not None and not self.client.is_connected:
                await self._close()
            raise Unavailable(f"NATS is unreachable: {type(error).__name__}", retry_after_s=2) from error

    async def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            closing = asyncio.create_task(self._close_client(client))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if self._closing:
            await asyncio.shield(asyncio.gather(*self._closing))

    async def _close_client(self, client: Client) -> None:
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await asyncio.wait_for(client.close(), self.timeout_s)

    async def __aenter__(self) -> NatsConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
