"""The platform's static files: the dashboard's own under `static/`, and copies of npm packages
vendored under `static/vendor/<package>-<version>/` (refreshed by `scripts/vendor_assets.py`), all
served under `/static` so no page references anything outside the platform."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
IMMUTABLE = "public, max-age=31536000, immutable"
"""For a file whose path names its version: what is at that URL never changes."""
_VERSION_FOLDER = r"-\d[0-9A-Za-z.+-]*"


class VersionedStaticFiles(StaticFiles):
    """Static files; those under `vendor/<package>-<version>/` are cached by browsers for a year
    without revalidation (a new version is a new path). Other files keep Starlette's validators."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        parts = Path(path).parts
        if len(parts) == 3 and parts[0] == "vendor" and re.search(_VERSION_FOLDER, parts[1]):
            response.headers["cache-control"] = IMMUTABLE
        return response


def vendored(package: str) -> str:
    """The URL path, under `STATIC_URL`, of the one vendored version of `package`."""
    vendor = STATIC_DIR / "vendor"
    pattern = re.compile(re.escape(package) + _VERSION_FOLDER)
    versions = [entry.name for entry in vendor.iterdir() if entry.is_dir()]
    found = sorted(name for name in versions if pattern.fullmatch(name))
    if len(found) != 1:
        raise RuntimeError(
            f"expected one vendored version of {package} in {vendor}, found {found or 'none'} "
            "(run `python scripts/vendor_assets.py`)"
        )
    return f"{STATIC_URL}/vendor/{found[0]}"


def static_files() -> VersionedStaticFiles:
    return VersionedStaticFiles(directory=STATIC_DIR)
