"""Admission to the models: while their backlog could not take one more full request, an ML
request is answered 503 with `Retry-After` before its body is read.

A refused request should cost nothing: reading, parsing and checking a 1 MB body of 256 inputs,
then looking each up in the cache, took the event loop several milliseconds per request, and at
ten such requests a second the loop had no time left for anyone else (bench/hostile.py). The
batcher refuses what does not fit too; this gate refuses it before it has cost anything.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia.api import problems
from sophia.core.errors import Unavailable

ML_PREFIXES = ("/v1/embeddings", "/api/v1/ml/")


class ModelAdmission:
    """Pure ASGI, behind `KeyGate` (a caller without a key learns nothing of the models' load)."""

    def __init__(self, app: ASGIApp, *, room: int, timeout_s: float) -> None:
        self.app = app
        self.room = room
        """The room in the backlog a request needs to be read: one of the most inputs it may carry."""
        self.timeout_s = timeout_s
        """A request's deadline in the queue: one whose inputs would wait longer is not read."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ML_PREFIXES):
            models = scope["app"].state.sophia.models
            batcher = models.embeddings.batcher if models is not None else None
            # Before the body, its size is unknown: refused if a full request would not fit, or if
            # even one input would not be done in time (the batcher judges the real count).
            if batcher is not None and (batcher.room < self.room or batcher.would_expire(1, self.timeout_s)):
                busy = Unavailable(
                    "The models are busy: their queue cannot take another request now. Nothing "
                    "was read; retry shortly.",
                    retry_after_s=1,
                )
                scope[problems.LOG_KIND_KEY] = "models' admission"
                response = await problems.sophia_error(Request(scope), busy)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
