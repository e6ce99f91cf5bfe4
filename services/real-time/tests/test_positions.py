"""Positions that count events: which resumes a stream's state can serve (`StreamState.not_resumable`)."""

from __future__ import annotations

import pytest

from sophia.events.codec import PACK_SPAN
from sophia.realtime.feed import REPLAY_MAX_MESSAGES, StreamState

STATE = StreamState("1796478182076897-1024", first_seq=10, last_seq=20)


def at(seq: int, index: int = 0) -> int:
    """The position of the event at `index` of the message at JetStream sequence `seq`."""
    return seq * PACK_SPAN + index


@pytest.mark.parametrize(
    ("after", "why"),
    [
        (at(20, 3), None),  # within the last message: the rest of it follows
        (STATE.last, None),  # after everything: nothing to replay, nothing missed
        (at(10), None),  # the first message stored still holds what follows
        (at(9, PACK_SPAN - 1), None),  # the end of a message gone: what follows is all stored
        (at(9, 2), "older than the stream's history"),  # the rest of message 9 is gone
        (at(3), "older than the stream's history"),
        (STATE.last + 1, "ahead of the stream"),
        (at(21), "ahead of the stream"),
    ],
)
def test_a_position_is_resumable_while_what_follows_it_is_stored(after, why):
    reason = STATE.not_resumable(STATE.epoch, after)
    assert reason is None if why is None else why in reason


def test_another_epoch_or_too_far_behind_is_not_resumable():
    assert "another epoch" in (STATE.not_resumable("1796478182076897", at(20)) or "")  # from before positions
    far = StreamState(STATE.epoch, first_seq=1, last_seq=REPLAY_MAX_MESSAGES + 10)
    assert f"more than {REPLAY_MAX_MESSAGES:,} messages behind" in (far.not_resumable(far.epoch, at(5)) or "")
    assert far.not_resumable(far.epoch, at(10)) is None
