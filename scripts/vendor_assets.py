"""Refresh the npm files the platform serves (Swagger UI, ReDoc, and the dashboard's htmx and uPlot).

    python scripts/vendor_assets.py            # fetch the versions in PACKAGES, replace the vendored ones
    python scripts/vendor_assets.py --check    # exit 1 if the vendored files are not those of PACKAGES

The platform serves these files itself (sophia.web.assets), so the docs pages and the dashboard
work on a machine without internet. A version bump is one edit of PACKAGES, then a run of this script: it runs
`npm pack <package>@<version>` in a temporary folder, copies the files listed for the package into
apps/web/src/sophia/web/static/vendor/<package>-<version>/, removes the package's other versions
and rewrites static/vendor/README.md (package, version, license, source, and a SHA-256 of each
file). It refuses a package whose license is no longer the one written here. `--check` needs no
network and no npm: it compares the vendor folder with PACKAGES and the files with the SHA-256
sums in its README. Only the standard library is used; the refresh needs `npm` on the PATH.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Package:
    version: str
    license: str
    files: tuple[str, ...]
    """Paths inside the npm package; each is written under its own name (no folders)."""


PACKAGES = {
    "swagger-ui-dist": Package(
        version="5.35.0",
        license="Apache-2.0",
        files=(
            "swagger-ui-bundle.js",
            "swagger-ui-bundle.js.LICENSE.txt",
            "swagger-ui.css",
            "favicon-32x32.png",
            "LICENSE",
            "NOTICE",
        ),
    ),
    # 2.x, not 3.x: redoc 3's standalone bundle is an ES module (it needs <script type="module">,
    # which FastAPI's ReDoc page does not write) and reports usage to Redocly unless told not to.
    "redoc": Package(
        version="2.5.4",
        license="MIT",
        files=(
            "bundles/redoc.standalone.js",
            "bundles/redoc.standalone.js.LICENSE.txt",
            "LICENSE",
        ),
    ),
    # The dashboard (sophia.web): fragments swapped in place, and time-series charts.
    "htmx.org": Package(version="2.0.11", license="0BSD", files=("dist/htmx.min.js", "LICENSE")),
    "uplot": Package(
        version="1.6.32",
        license="MIT",
        files=("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"),
    ),
}

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "apps" / "web" / "src" / "sophia" / "web" / "static" / "vendor"
README = "README.md"
SHA256_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$", re.MULTILINE)


def folder_name(name: str, package: Package) -> str:
    return f"{name}-{package.version}"


def source_url(name: str, package: Package) -> str:
    return f"https://registry.npmjs.org/{name}/-/{name}-{package.version}.tgz"


def is_version_folder(entry: Path, name: str) -> bool:
    """Whether `entry` is a folder of some version of `name` (`redoc-2.5.4`, not `redoc-foo`)."""
    return entry.is_dir() and re.fullmatch(re.escape(name) + r"-\d[0-9A-Za-z.+-]*", entry.name) is not None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_readme(vendor: Path) -> str:
    """The README of the vendor folder as PACKAGES and the files now in it make it."""
    rows = "\n".join(
        f"| `{name}` | {package.version} | {package.license} | {source_url(name, package)} |"
        for name, package in PACKAGES.items()
    )
    sums = "\n".join(
        f"{sha256(vendor / folder_name(name, package) / PurePosixPath(file).name)}  "
        f"{folder_name(name, package)}/{PurePosixPath(file).name}"
        for name, package in PACKAGES.items()
        for file in package.files
    )
    return f"""# Vendored web assets

Swagger UI (`/docs`), ReDoc (`/redoc`) and the dashboard (`/`: htmx, uPlot) load these files from
the platform itself (`/static/vendor/...`), so the pages need no internet. They are copied
unchanged from the npm packages below, each in a folder named after its version (served with a
one-year immutable cache), with its license.

Written by `scripts/vendor_assets.py`; do not edit by hand. To change a version, edit `PACKAGES`
in the script and run `python scripts/vendor_assets.py` (needs npm); `--check` compares this folder
with the script (no network).

| Package | Version | License | Source |
| --- | --- | --- | --- |
{rows}

SHA-256 of each file, in `sha256sum` format:

```
{sums}
```
"""


def npm_pack(name: str, package: Package, into: Path) -> Path:
    """Download `name@version` from npm as its tarball (npm checks the registry's integrity)."""
    command = ["npm", "pack", f"{name}@{package.version}", "--json", "--pack-destination", str(into)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    packed = json.loads(done.stdout)
    return into / str(packed[0]["filename"])


def extract(tarball: Path, name: str, package: Package, into: Path) -> None:
    """Write `package.files` from the tarball into `into`, after checking the package's license."""
    with tarfile.open(tarball, "r:gz") as archive:

        def read(path: str) -> bytes:
            member = archive.getmember(f"package/{path}")
            stream = archive.extractfile(member) if member.isfile() else None
            if stream is None:
                raise SystemExit(f"{name}@{package.version}: package/{path} is not a regular file")
            return stream.read()

        manifest = json.loads(read("package.json"))
        if manifest.get("license") != package.license:
            raise SystemExit(
                f"{name}@{package.version} is licensed {manifest.get('license')!r}, not "
                f"{package.license!r}: review the license, then update PACKAGES"
            )
        for path in package.files:
            (into / PurePosixPath(path).name).write_bytes(read(path))


def refresh(vendor: Path) -> None:
    vendor.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vendor-assets-") as temporary:
        for name, package in PACKAGES.items():
            tarball = npm_pack(name, package, Path(temporary))
            staged = Path(temporary) / folder_name(name, package)
            staged.mkdir()
            extract(tarball, name, package, staged)
            for old in sorted(entry for entry in vendor.iterdir() if is_version_folder(entry, name)):
                shutil.rmtree(old)
                print(f"removed {old.relative_to(ROOT)}")
            target = vendor / folder_name(name, package)
            shutil.move(staged, target)
            size = sum(file.stat().st_size for file in target.iterdir())
            print(
                f"vendored {name}@{package.version} ({package.license}, {size / 1024:.0f} KiB) "
                f"into {target.relative_to(ROOT)}: {', '.join(sorted(f.name for f in target.iterdir()))}"
            )
    (vendor / README).write_text(render_readme(vendor))
    print(f"wrote {(vendor / README).relative_to(ROOT)}")


def problems(vendor: Path) -> list[str]:
    """What differs between the vendor folder and PACKAGES (empty when they agree)."""
    found: list[str] = []
    expected = {folder_name(name, package): package for name, package in PACKAGES.items()}
    present = {entry.name for entry in vendor.iterdir()} if vendor.is_dir() else set()
    for folder in sorted(present - set(expected) - {README}):
        found.append(f"{folder}: not in PACKAGES (an old version?)")
    for folder, package in expected.items():
        if folder not in present:
            found.append(f"{folder}: missing")
            continue
        wanted = {PurePosixPath(file).name for file in package.files}
        have = {entry.name for entry in (vendor / folder).iterdir()}
        found += [f"{folder}/{file}: missing" for file in sorted(wanted - have)]
        found += [f"{folder}/{file}: not listed in PACKAGES" for file in sorted(have - wanted)]
        empty = [file for file in sorted(wanted & have) if (vendor / folder / file).stat().st_size == 0]
        found += [f"{folder}/{file}: empty" for file in empty]
    if not (vendor / README).is_file():
        return [*found, f"{README}: missing"]
    readme = (vendor / README).read_text()
    recorded = {path: digest for digest, path in SHA256_LINE.findall(readme)}
    for path, digest in recorded.items():
        if (vendor / path).is_file() and sha256(vendor / path) != digest:
            found.append(f"{path}: SHA-256 differs from the one in {README} (changed by hand?)")
    if not found and readme != render_readme(vendor):
        found.append(f"{README}: not the one this script writes for PACKAGES (run the script)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare the vendored files with PACKAGES")
    arguments = parser.parse_args(argv)
    if arguments.check:
        found = problems(VENDOR)
        for problem in found:
            print(f"vendor_assets: {problem}", file=sys.stderr)
        if found:
            print("vendor_assets: run `python scripts/vendor_assets.py` to refresh", file=sys.stderr)
            return 1
        versions = ", ".join(f"{name}@{package.version}" for name, package in PACKAGES.items())
        print(f"vendored assets match PACKAGES: {versions}")
        return 0
    refresh(VENDOR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
