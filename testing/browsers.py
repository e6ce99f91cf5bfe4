"""What the browser tier's tests share: Debian's chromium (installed by `make tools`; Playwright
downloads nothing)."""

from __future__ import annotations

import shutil

import pytest


def chromium() -> str:
    """The path of Debian's chromium; the test fails, saying how to install it, when it is absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run `make tools` (Debian package chromium)")
    return found
