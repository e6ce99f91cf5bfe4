"""A client's frames: written to its connection at once while the transport takes them, kept in
order in a bounded backlog while it pushes back, written as it drains; past the bound, dropped."""

from __future__ import annotations

import asyncio

from sophia.realtime.hub import Client, Hub, Subscription


class FakeLink:
    """A connection whose transport takes `room` frames, then pushes back until `drain()`."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.open = True

    @property
    def paused(self) -> bool:
        return self.room <= 0

    def write_frame(self, frame: bytes) -> bool:
        if not self.open:
            return False
        self.written.append(frame)
        self.room -= 1
        return True

    def drain(self, room: int, client: Client) -> None:
        """The transport sent what it held and takes `room` more (resume_writing)."""
        self.room = room
        client.drained()


def frames(count: int, start: int = 0) -> list[bytes]:
    return [str(number).encode() for number in range(start, start + count)]


def test_frames_are_written_at_once_while_the_transport_takes_them():
    link = FakeLink(room=10)
    client = Client(link, max_queue=3)
    for frame in frames(5):
        client.send(frame)
    assert link.written == frames(5)
    assert client.queued == 0


def test_a_backlog_keeps_order_and_is_written_as_the_transport_drains():
    link, dropped = FakeLink(room=2), []
    client = Client(link, max_queue=5, on_drop=dropped.append)
    for frame in frames(7):  # 2 written, 5 waiting: at the bound, not past it
        client.send(frame)
    assert link.written == frames(2)
    assert client.queued == 5
    link.drain(3, client)  # takes 3, then pushes back again
    assert link.written == frames(5)
    assert client.queued == 2
    client.send(b"7")  # behind the backlog, never ahead of it
    link.drain(10, client)
    assert link.written == [*frames(7), b"7"]
    assert client.queued == 0
    client.send(b"8")  # the backlog is gone: straight to the transport again
    assert link.written[-1] == b"8"
    assert dropped == []


def test_a_client_past_its_bound_is_dropped_once_and_nothing_more_is_written():
    link, dropped = FakeLink(room=1), []
    client = Client(link, max_queue=3, on_drop=dropped.append)
    for frame in frames(5):  # 1 written, 3 waiting, the 5th is one too many
        client.send(frame)
    assert dropped == [client]
    assert client.behind == "more than 3 frames behind"
    assert client.queued == 0
    client.send(b"late")
    link.drain(10, client)
    assert link.written == frames(1)
    assert dropped == [client]


async def test_all_written_waits_for_the_backlog_and_ends_when_the_connection_is_lost():
    link = FakeLink(room=0)
    client = Client(link, max_queue=10)
    await asyncio.wait_for(client.all_written(), 1)  # nothing waiting
    client.send(b"a")
    waiting = asyncio.ensure_future(client.all_written())
    await asyncio.sleep(0)
    assert not waiting.done()
    link.drain(1, client)
    await asyncio.wait_for(waiting, 1)
    assert link.written == [b"a"]

    client.send(b"b")  # the transport is full again
    waiting = asyncio.ensure_future(client.all_written())
    await asyncio.sleep(0)
    link.open = False
    client.lost()
    await asyncio.wait_for(waiting, 1)
    client.send(b"c")
    assert link.written == [b"a"]
    assert client.closed
    assert client.behind is None


def test_a_subscription_holds_live_frames_while_it_replays_and_releases_those_past_it():
    link = FakeLink(room=100)
    client, hub = Client(link, max_queue=10), Hub()
    subscription = Subscription(client, "records", "records", 3, replaying=True)
    hub.add(subscription)
    hub.publish("records", 5, b"5")
    hub.publish("records", 6, b"6")
    assert link.written == []
    for seq in (4, 5):  # the replay
        subscription.last_seq = seq
        client.send(str(seq).encode())
    subscription.go_live()
    hub.publish("records", 7, b"7")
    assert link.written == [b"4", b"5", b"6", b"7"]
    hub.remove(subscription)
    assert client.subscriptions == {}
