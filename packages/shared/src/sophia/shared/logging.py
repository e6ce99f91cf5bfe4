"""Structured logs: JSON lines with the request id bound through context variables."""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import orjson
import structlog

from sophia.shared.rates import TokenBucket

CLIENT_LINES_PER_S = 10.0
"""The default of `SOPHIA_LOG_CLIENT_LINES_PER_S`."""


def _dumps(value: object, default: object = None) -> str:
    return orjson.dumps(value, default=default).decode()  # type: ignore[arg-type]


class _Stderr:
    """Whatever `sys.stderr` is at write time (test runners swap it), not what it was at start."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@dataclass(slots=True)
class _Kind:
    bucket: TokenBucket
    left_out: int = 0


class LogThrottle:
    """At most `per_s` lines a second of each kind (a burst of twice that), for the lines a client
    can cause at will: a failed or slow request's access line, a 503's warning. Past it a line is
    counted, not written, and the next one written of its kind says how many were left out
    (`suppressed`): a flood of refused requests leaves a sample in the log, not the flood (the
    metrics count every request). Kinds are few (a route and a status); the `max_kinds` last used
    are remembered. `per_s` 0 writes every line. Not thread-safe: one event loop uses it."""

    def __init__(self, per_s: float, max_kinds: int = 256) -> None:
        self.per_s = per_s
        self.max_kinds = max_kinds
        self._kinds: OrderedDict[Hashable, _Kind] = OrderedDict()

    def admit(self, kind: Hashable) -> int | None:
        """None: leave this line out. Otherwise the lines of `kind` left out since the last one written."""
        if self.per_s <= 0:
            return 0
        entry = self._kinds.get(kind)
        if entry is None:
            if len(self._kinds) >= self.max_kinds:
                self._kinds.popitem(last=False)
            entry = self._kinds[kind] = _Kind(TokenBucket(self.per_s))
        else:
            self._kinds.move_to_end(kind)
        if not entry.bucket.take():
            entry.left_out += 1
            return None
        suppressed, entry.left_out = entry.left_out, 0
        return suppressed

    def left_out(self) -> int:
        """Lines left out and not yet reported by a line written, over every kind remembered."""
        return sum(entry.left_out for entry in self._kinds.values())

    def reset(self, per_s: float) -> None:
        self.per_s = per_s
        self._kinds.clear()


CLIENT_LINES = LogThrottle(CLIENT_LINES_PER_S)
"""The process's throttle of the lines clients cause (`configure_logging` sets its rate)."""


def configure_logging(
    level: str = "INFO", json: bool = True, client_lines_per_s: float = CLIENT_LINES_PER_S
) -> None:
    """Route structlog and the standard library to stderr in one format; `client_lines_per_s` is
    the rate of `CLIENT_LINES`."""
    CLIENT_LINES.reset(client_lines_per_s)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.plain_traceback,  # rich's, with locals, costs ~1 s a traceback
        )
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One INFO line per HTTP request (probes, the MCP gateway's upstream calls) drowns everything else.
    for chatty in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
