"""Fixtures of the workers' tests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType

import pytest
import structlog
from structlog.testing import LogCapture, ReturnLogger


class CapturedLogs(LogCapture):
    """What a module logged, as dicts (`entries`)."""

    def count(self, event: str) -> int:
        return sum(entry["event"] == event for entry in self.entries)

    def events(self, event: str) -> list[dict[str, object]]:
        return [dict(entry) for entry in self.entries if entry["event"] == event]


@pytest.fixture
def logs_of(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CapturedLogs]:
    """`logs_of(module, ...)`: what those modules' `log` logs from now on, at every level.

    The modules get a logger of this test's own: structlog's `capture_logs` misses a module
    logger that an earlier `configure_logging` had already cached (and filters by its level)."""

    def capture(*modules: ModuleType) -> CapturedLogs:
        captured = CapturedLogs()
        logger = structlog.wrap_logger(
            ReturnLogger(),
            processors=[captured],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        for module in modules:
            monkeypatch.setattr(module, "log", logger)
        return captured

    return capture
