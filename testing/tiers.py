"""The test tiers after the fast one, and the tier a test module's name gives it."""

from __future__ import annotations

from pathlib import Path

TIERS = ("chaos", "load", "e2e", "browser")
"""A test module named for one (test_relay_chaos.py) holds only its tests: the root conftest.py
leaves it unread when `-m` deselects that tier."""


def tier_of(path: Path) -> str | None:
    """The tier a test module's name gives it: test_relay_chaos.py is in the chaos tier."""
    suffix = path.stem.rsplit("_", 1)[-1]
    return suffix if path.name.startswith("test_") and suffix in TIERS else None
