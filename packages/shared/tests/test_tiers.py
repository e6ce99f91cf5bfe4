"""A test module named for a tier (test_relay_chaos.py) is left out, unread, when `-m` deselects
that tier (see the root conftest.py); so each must mark every one of its tests with it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tiers import TIERS, tier_of

ROOT = Path(__file__).resolve().parents[3]


def module_mark(path: Path) -> str | None:
    """The tier in `pytestmark = pytest.mark.<tier>` at the module's top level, if any."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["pytestmark"]:
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr in TIERS:
                return value.attr
    return None


TIER_MODULES = sorted(
    path
    for folder in ("apps", "packages", "services", "bench")
    for path in (ROOT / folder).rglob("test_*.py")
    if ".venv" not in path.parts and tier_of(path)
)


def test_the_tiers_modules_are_found():
    assert {tier_of(path) for path in TIER_MODULES} >= {"chaos", "load"}


@pytest.mark.parametrize("path", TIER_MODULES, ids=lambda path: path.name)
def test_a_module_named_for_a_tier_marks_all_its_tests_so(path):
    assert module_mark(path) == tier_of(path), f"{path.name} needs pytestmark = pytest.mark.{tier_of(path)}"


def test_a_tier_is_read_only_from_the_end_of_a_test_modules_name():
    assert tier_of(Path("test_relay_chaos.py")) == "chaos"
    assert tier_of(Path("test_openapi_fuzz_load.py")) == "load"
    assert tier_of(Path("test_loadtest.py")) is None
    assert tier_of(Path("chaos_helpers_chaos.py")) is None
    assert tier_of(Path("test_chaos.py")) == "chaos"
