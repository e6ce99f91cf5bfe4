"""Rates a client may not exceed: a token bucket, shared by whatever bounds one (a WebSocket's
frames, a key's tool calls, the log lines a client can cause). It depends on nothing of Sophia's,
so the logging module can use it without a cycle."""

from __future__ import annotations

import time


class TokenBucket:
    """`per_s` tokens a second, holding up to two seconds' worth: a client may burst, not flood.
    One per client (a WebSocket's frames, a key's requests); not thread-safe, as nothing here is."""

    __slots__ = ("capacity", "per_s", "tokens", "updated")

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.capacity = 2.0 * per_s
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        """Spend a token if there is one."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_s)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait_s(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1 - self.tokens) / self.per_s)
