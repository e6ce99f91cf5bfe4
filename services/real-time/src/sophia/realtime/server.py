"""The WebSocket server: `/ws` for clients with an API key, `/healthz` and `/metrics` beside it.

A client authenticates in the handshake (`Authorization: Bearer <key>`; a key that does not
verify is refused with 401 before any frame, an address sending bad keys with 429). Each
connection has one task, its reader (its frames, answered in order); what is sent to it is written
to its transport at once (`Connection.write_frame`, the frame's bytes put together here), and
waits in the client's backlog only while the transport pushes back (hub.py). A subscription to a
channel the key may not read, an unknown channel, a bad frame or a position in another epoch is
answered with an error frame or a resync, never a crash. The `ops` channel's ticker (ops.py) runs
from the start until the drain begins. On shutdown the server stops accepting, lets every
client's backlog drain, then closes each with 1012 ("service restart": reconnect, elsewhere if
need be, and resume).
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from http import HTTPStatus
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from prometheus_client import Counter, Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Event

from sophia.core.errors import Forbidden, Invalid, SophiaError, TooManyRequests, Unauthorized, Unavailable
from sophia.database import tokens
from sophia.database.verifier import KeyVerifier, bearer_secret
from sophia.events.connection import NATS_FAILURES
from sophia.realtime.channels import Channel, UnknownChannel, parse_channel
from sophia.realtime.feed import StreamFeed, TooFarBehind
from sophia.realtime.hub import Client, Hub, Subscription
from sophia.realtime.ops import OpsTicker
from sophia.realtime.protocol import FrameError, Position, error, parse_request, quoted, reply
from sophia.realtime.protocol import Request as Frame
from sophia.shared.logging import get_logger
from sophia.shared.metrics import render_latest
from sophia.shared.process import settle_heap
from sophia.shared.rates import TokenBucket
from sophia.shared.settings import Settings

log = get_logger(__name__)

CONNECTIONS = Gauge("sophia_realtime_connections", "WebSocket clients connected")
RESUMES = Counter("sophia_realtime_resumes_total", "Subscriptions with a position, by outcome", ["outcome"])
FLOODS = Counter("sophia_realtime_floods_total", "Clients closed for sending frames too fast")
FLOOD_CLOSE = 1008
"""Close code (policy violation) for a client sending frames faster than its budget."""
SLOW_CLOSE = 4008
"""Close code for a client dropped for falling behind (it may reconnect and resume)."""
RESTART_CLOSE = 1012
REPLAY_STEP_S = 30.0
RESYNC_REASON = "Not resumed: {}. Read the current state again; live events follow."
DRAIN_S = 5.0
HISTORY_FAILURES: tuple[type[BaseException], ...] = (SophiaError, *NATS_FAILURES)
"""What reading a stream's state or history raises when NATS refuses or is away (nats-py's own
errors included: the stream gone, JetStream not answering): the client is told `unavailable`."""
CLOSE_TIMEOUT_S = 5.0
"""How long a close waits for the client's answer before the connection is cut."""


async def close_within(connection: ServerConnection, code: int, reason: str) -> None:
    """Close `connection` with `code`, cut (aborted) if the close has not completed within
    `CLOSE_TIMEOUT_S`. websockets' own close bounds the wait for the client's answer, not the wait
    for its write buffer to drain: a client that reads nothing (its transport full) held its close,
    and all the connection pins (its transport's buffer, its handler), until the keepalive gave
    up on it, 20 s and more later."""
    closing = asyncio.ensure_future(connection.close(code, reason))
    try:
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            connection.transport.abort()  # the close ends with connection_lost
            await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
    finally:
        closing.cancel()  # none should be left by now (a done one is left as it is)
        closing.add_done_callback(_seen)


def _seen(closing: asyncio.Future[None]) -> None:
    """Its outcome read: a close ends the connection whatever it raised (ConnectionClosed, mostly)."""
    if not closing.cancelled():
        closing.exception()


def text_frame(payload: bytes) -> bytes:
    """A server's text frame (RFC 6455 5.2): FIN and opcode 1, unmasked, the length in its
    shortest form, then `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class _LastFrame:
    """The last payload written and its frame: a publication goes to each subscriber in turn, so
    its frame is put together once and the same bytes go to every one of them."""

    __slots__ = ("frame", "payload")

    def __init__(self) -> None:
        self.payload, self.frame = b"", text_frame(b"")

    def of(self, payload: bytes) -> bytes:
        if payload is not self.payload:  # identity: the reference held here keeps it alive
            self.payload, self.frame = payload, text_frame(payload)
        return self.frame


_LAST_FRAME = _LastFrame()


class Connection(ServerConnection):
    """A `ServerConnection` whose frames are written without awaiting, and which tells its
    client when its transport drains (the flow control the client's backlog follows)."""

    clients: ClassVar[dict[ServerConnection, Client]] = {}
    """The server's clients by connection (each server has its own: `connection_class`)."""

    send_buffer_bytes: ClassVar[int] = 0
    """The kernel send buffer each connection gets (0: the kernel's autotuning)."""

    frames: TokenBucket | None = None
    """The client's frame budget (set by the handler): its pings and pongs spend it too."""
    _flood_close: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A bounded kernel buffer: what a client that stops reading can pin in the kernel, and how
        # soon its transport pushes back so that its backlog (and the 4008 bound) takes over.
        if self.send_buffer_bytes:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        super().connection_made(transport)

    def write_frame(self, frame: bytes) -> bool:
        """`frame` (UTF-8 JSON) as a text frame, written now; False once the connection is no
        longer open. The frame is put together here (`text_frame`) rather than by websockets'
        `send_text`, whose frame objects and checks were most of a delivery's cost (`broadcast()`
        pays them per client too): a publication goes to thousands of clients. Safe beside what
        websockets itself writes (replies to pings, the close): each write is a whole frame, no
        frame is ever fragmented, and compression is off."""
        if self.protocol.state is not OPEN:
            return False
        try:
            self.transport.write(_LAST_FRAME.of(frame))
        except Exception as failed:  # the transport failed: connection_lost follows
            log.debug("realtime_write_failed", error=type(failed).__name__)
            return False
        return True

    def process_event(self, event: Event) -> None:
        # websockets answers every ping by itself, whether or not the client reads the pongs: a
        # client's control frames are counted with its messages, or a flood of pings would grow
        # the transport's buffer without bound (and never reach the handler's budget). So are the
        # fragments after a message's first (the handler counts each message once): one message
        # of 4,000 empty fragments held the event loop as long as 4,000 messages.
        if (
            isinstance(event, WireFrame)
            and event.opcode in (Opcode.PING, Opcode.PONG, Opcode.CONT)
            and self.frames is not None
            and not self.frames.take()
        ):
            self.flooded()
            return
        super().process_event(event)

    def flooded(self) -> None:
        """Close with `FLOOD_CLOSE` for control frames or fragments past the budget, and answer no
        more pings."""
        if self._flood_close is not None:
            return
        FLOODS.inc()
        assert self.frames is not None
        self.protocol.fail(FLOOD_CLOSE, f"more than {self.frames.per_s:g} frames a second; slow down")
        try:
            self.send_data()
        except Exception as failed:  # the transport failed: connection_lost follows
            log.debug("realtime_write_failed", error=type(failed).__name__)
        self._flood_close = asyncio.ensure_future(self.close())  # cut if the client does not answer

    def resume_writing(self) -> None:
        super().resume_writing()
        client = self.clients.get(self)
        if client is not None:
            client.drained()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        client = self.clients.get(self)
        if client is not None:
            client.lost()


def connection_class(clients: dict[ServerConnection, Client], send_buffer_bytes: int) -> type[Connection]:
    """`Connection` for a server whose clients are `clients`."""

    class ServedConnection(Connection):
        pass

    ServedConnection.clients = clients
    ServedConnection.send_buffer_bytes = send_buffer_bytes
    return ServedConnection


class RealtimeServer:
    """`async with RealtimeServer(settings, verifier, feeds)`: serving on `port` until left."""

    def __init__(
        self,
        settings: Settings,
        verifier: KeyVerifier,
        feeds: dict[str, StreamFeed],
        hub: Hub,
        *,
        token_secret: bytes,
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.feeds = feeds
        """By unprefixed stream name."""
        self.hub = hub
        self.port = 0
        self._server: Server | None = None
        self.token_secret = token_secret
        self._scopes: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        """The scope each connection was admitted with (its key's, or its token's)."""
        self._clients: dict[ServerConnection, Client] = {}
        self._closing: set[asyncio.Task[None]] = set()
        """Closes of clients dropped for falling behind, under way."""
        self._on_drop = self._close_behind  # one bound method for every client
        self.ops = OpsTicker(hub, lambda: len(self._clients), interval_s=settings.realtime_ops_interval_s)

    async def __aenter__(self) -> RealtimeServer:
        self._server = await serve(
            self._serve,
            self.settings.realtime_host,
            self.settings.realtime_port,
            process_request=self._admit,
            create_connection=connection_class(self._clients, self.settings.realtime_send_buffer_bytes),
            compression=None,  # permessage-deflate costs CPU per frame per client: off
            max_size=self.settings.realtime_max_frame_bytes,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=CLOSE_TIMEOUT_S,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self.ops.start()
        settle_heap()
        log.info("realtime_started", host=self.settings.realtime_host, port=self.port)
        return self

    @property
    def clients(self) -> list[Client]:
        """The clients connected now."""
        return list(self._clients.values())

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Stop accepting; give every client `DRAIN_S` to receive what is queued; close each with 1012."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await self.ops.stop()
        server.close(close_connections=False)
        flushed = [asyncio.ensure_future(client.all_written()) for client in self._clients.values()]
        if flushed:
            await asyncio.wait(flushed, timeout=DRAIN_S)
            for waiting in flushed:
                waiting.cancel()
        # All at once, each for at most `CLOSE_TIMEOUT_S`: a client that does not answer its close
        # (or does not read, its transport full) must hold back neither the others' nor the drain.
        restart = "service restart: reconnect and resume"
        await asyncio.gather(
            *(close_within(connection, RESTART_CLOSE, restart) for connection in list(self._clients))
        )
        await server.wait_closed()
        if self._closing:
            await asyncio.wait(set(self._closing))

    async def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            if not self.settings.anonymous_detail:  # as the API's: a key, checked as for /ws
                try:
                    await self._scope_of(connection, request)
                except (Unauthorized, TooManyRequests, Unavailable) as refused:
                    return connection.respond(HTTPStatus.UNAUTHORIZED, f"{refused.detail}\n")
            body, content_type = render_latest()
            return Response(200, "OK", Headers({"Content-Type": content_type}), body)
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found: the WebSocket is at /ws.\n")
        try:
            self._scopes[connection] = await self._scope_of(connection, request)
        except Unauthorized as refused:
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"{refused.detail}\n")
        except TooManyRequests as refused:
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, f"{refused.detail}\n")
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
        except Unavailable as refused:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{refused.detail}\n")
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
        return None

    async def _scope_of(self, connection: ServerConnection, request: Request) -> str:
        """The scope of the key in the `Authorization` header, or of the token in `?token=`
        (what a browser sends: it cannot set headers on a WebSocket)."""
        headers = request.headers.get_all("Authorization")
        if len(headers) > 1:
            raise Unauthorized("Send one Authorization header (`Bearer <key>`), not several.")
        header = headers[0] if headers else ""
        token = parse_qs(urlsplit(request.path).query).get("token")
        if not header and token:
            return tokens.verify(self.token_secret, token[0]).scope
        address = connection.remote_address[0] if connection.remote_address else ""
        return (await self.verifier.admit(bearer_secret(header), address)).scope

    async def _serve(self, connection: ServerConnection) -> None:
        assert isinstance(connection, Connection)
        scope = self._scopes.pop(connection)
        client = Client(connection, max_queue=self.settings.realtime_max_queue, on_drop=self._on_drop)
        self._clients[connection] = client
        CONNECTIONS.inc()
        frames = TokenBucket(self.settings.realtime_max_frames_per_s)  # a burst, not a flood
        connection.frames = frames
        closing: asyncio.Task[None] | None = None
        try:
            async for data in connection:
                if client.behind is not None:
                    break
                if closing is not None:
                    continue  # read and dropped, so the peer's close reply gets through
                if not frames.take():
                    FLOODS.inc()
                    limit = self.settings.realtime_max_frames_per_s
                    reason = f"more than {limit} frames a second; slow down"
                    closing = asyncio.create_task(close_within(connection, FLOOD_CLOSE, reason))
                    continue
                await self._answer(client, scope, data)
        except ConnectionClosed:
            pass
        finally:
            for subscription in list(client.subscriptions.values()):
                self.hub.remove(subscription)
            client.lost()
            del self._clients[connection]
            CONNECTIONS.dec()

    def _close_behind(self, client: Client) -> None:
        """Close a client dropped for falling behind with `SLOW_CLOSE` at once (a task only for
        such a client): its backlog is dropped, the close frame follows what the transport holds,
        and the connection is cut if that is not through within `CLOSE_TIMEOUT_S` (it reads
        nothing): what it pins is freed within seconds, not when the keepalive gives up."""
        reason = f"{client.behind}; reconnect and resume from your last position"
        assert isinstance(client.link, Connection)
        closing = asyncio.create_task(close_within(client.link, SLOW_CLOSE, reason[:120]))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _answer(self, client: Client, scope: str, data: str | bytes) -> None:
        request: Frame | None = None
        before: Subscription | None = None
        try:
            request = parse_request(data)
            if request.op == "ping":
                client.send(reply("pong", request.id))
            elif request.op == "subscribe":
                if isinstance(request.channel, str):
                    before = client.subscriptions.get(request.channel)
                await self._subscribe(client, scope, request)
            else:
                self._unsubscribe(client, request)
        except FrameError as refused:
            client.send(error(refused.code, refused.detail, refused.frame_id))
        except ConnectionClosed:
            raise
        except Exception as failed:  # a bug: this frame fails, not the connection (nor the others)
            self._failed(client, request, before, failed)

    def _failed(
        self, client: Client, request: Frame | None, before: Subscription | None, failed: Exception
    ) -> None:
        """Answer a frame whose handling raised what no client input should: logged with its
        traceback, and an `internal` error frame naming the frame's id; the connection goes on.
        A subscription the frame was making is removed, even if `subscribed` and part of its
        history went out (it may be replaying, holding live frames): the client is not subscribed,
        as for any error frame, and may subscribe again (from its last position)."""
        frame_id = None if request is None else request.id
        op = None if request is None else request.op
        log.error(
            "realtime_frame_failed", op=op, frame_id=frame_id, error=type(failed).__name__, exc_info=failed
        )
        if request is not None and request.op == "subscribe" and isinstance(request.channel, str):
            made = client.subscriptions.get(request.channel)
            if made is not None and made is not before:
                self.hub.remove(made)
        detail = (
            "The server failed on this frame (logged); a subscribe so answered left no subscription. Retry."
        )
        client.send(error("internal", detail, frame_id))

    async def _subscribe(self, client: Client, scope: str, request: Frame) -> None:
        try:
            channel = parse_channel(request.channel)
            channel.check_scope(scope)
        except Invalid as refused:
            code = "unknown_channel" if isinstance(refused, UnknownChannel) else "bad_channel"
            raise FrameError(code, refused.detail, request.id) from None
        except Forbidden as refused:
            raise FrameError("forbidden", refused.detail, request.id) from None
        if channel.name in client.subscriptions:
            raise FrameError(
                "already_subscribed", f"Already subscribed to {quoted(channel.name)}.", request.id
            )
        if len(client.subscriptions) >= self.settings.realtime_max_subscriptions:
            limit = self.settings.realtime_max_subscriptions
            raise FrameError(
                "too_many_subscriptions", f"At most {limit} channels per connection.", request.id
            )
        if channel.stream is None:  # `ops`: the figures of now, no history to resume from
            now = Position(self.ops.epoch, self.ops.live_seq)
            not_resumed = None if request.since is None else "the ops channel keeps no history"
            self._subscribe_live(client, request, channel, now, not_resumed)
            return
        feed = self.feeds[channel.stream]
        if request.since is None:
            self._subscribe_live(client, request, channel, Position(feed.epoch, feed.live_seq))
            return
        await self._resume(client, request, channel.name, channel.family, feed, request.since)

    def _subscribe_live(
        self,
        client: Client,
        request: Frame,
        channel: Channel,
        position: Position,
        not_resumed: str | None = None,
    ) -> None:
        """Subscribe `client` to what comes after `position`; `not_resumed` says why a `since`
        given was not served."""
        self.hub.add(Subscription(client, channel.name, channel.family, position.seq, replaying=False))
        if not_resumed is None:
            client.send(reply("subscribed", request.id, channel=channel.name, position=position.as_dict()))
            return
        RESUMES.labels("resync").inc()
        client.send(
            reply(
                "subscribed",
                request.id,
                channel=channel.name,
                position=position.as_dict(),
                recovered=False,
                reason=RESYNC_REASON.format(not_resumed),
            )
        )

    async def _resume(
        self, client: Client, request: Frame, channel: str, family: str, feed: StreamFeed, since: Position
    ) -> None:
        subscription = Subscription(client, channel, family, since.seq, replaying=True)
        self.hub.add(subscription)  # live events are held from now on: none falls between
        reason: str | None = None
        history: list[tuple[int, bytes]] | None = None
        if since.epoch == feed.epoch:
            # Read with no await since the hold began: whatever the feed brings next is held.
            try:
                recent = feed.recent(channel, since.seq)
            except TooFarBehind as far:  # the stream holds the same: no need to read it
                recent, reason = None, far.reason
            if recent is not None:
                RESUMES.labels("from_memory").inc()
                await self._replay(client, request, since, subscription, recent, until_seq=feed.live_seq)
                return
        if reason is None:
            try:
                state = await feed.state()
                reason = state.not_resumable(since.epoch, since.seq)
                if reason is None:
                    history = await feed.replay(channel, since.seq, state.last)
            except TooFarBehind as far:
                reason = far.reason
            except HISTORY_FAILURES as failed:
                self.hub.remove(subscription)
                raise FrameError(
                    "unavailable", f"History cannot be read now ({type(failed).__name__}); retry.", request.id
                ) from None
        if history is None:
            RESUMES.labels("resync").inc()
            subscription.last_seq = feed.live_seq
            client.send(
                reply(
                    "subscribed",
                    request.id,
                    channel=channel,
                    position=Position(feed.epoch, subscription.last_seq).as_dict(),
                    recovered=False,
                    reason=RESYNC_REASON.format(reason),
                )
            )
            subscription.go_live()
            return
        RESUMES.labels("from_stream").inc()
        await self._replay(client, request, since, subscription, history, until_seq=state.last)

    async def _replay(
        self,
        client: Client,
        request: Frame,
        since: Position,
        subscription: Subscription,
        history: list[tuple[int, bytes]],
        *,
        until_seq: int,
    ) -> None:
        """Confirm the resume, send `history` (everything of the channel up to `until_seq`), then
        release what the live feed brought meanwhile past it.

        History goes out in steps of half the client's queue (`max_queue`), each handed to the
        transport before the next is sent: a resume from far back never overflows the backlog
        (and is never mistaken for a slow consumer), while a client that does not read it within
        `REPLAY_STEP_S` a step is."""
        reply_frame = reply(
            "subscribed", request.id, channel=subscription.channel, position=since.as_dict(), recovered=True
        )
        client.send(reply_frame)
        step, queued = max(1, client.max_queue // 2), 1
        for seq, frame in history:
            if seq <= subscription.last_seq:
                continue
            if queued >= step:
                if not await self._written(client):
                    return
                queued = 0
            subscription.last_seq = seq
            client.send(frame)
            queued += 1
        subscription.last_seq = max(subscription.last_seq, until_seq)
        subscription.go_live()

    async def _written(self, client: Client) -> bool:
        """Whether everything sent to `client` was handed to its transport within `REPLAY_STEP_S`
        (its backlog emptied); if not, it is dropped as behind."""
        try:
            await asyncio.wait_for(client.all_written(), REPLAY_STEP_S)
        except TimeoutError:
            client.drop(f"did not read its history within {REPLAY_STEP_S:g} s a step")
        return client.behind is None and not client.closed

    def _unsubscribe(self, client: Client, request: Frame) -> None:
        if not isinstance(request.channel, str):  # not echoed: repr() of one deeply nested raises
            raise FrameError(
                "bad_channel", "A channel is a name such as `records` or `records:hubspot:deal`.", request.id
            )
        subscription = client.subscriptions.get(request.channel)
        if subscription is None:
            raise FrameError("not_subscribed", f"Not subscribed to {quoted(request.channel)}.", request.id)
        self.hub.remove(subscription)
        client.send(reply("unsubscribed", request.id, channel=subscription.channel))
