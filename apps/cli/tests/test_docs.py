"""The README and docs stand on their own: every file they name exists, and none points outside."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `docs/x.md`, `bench/y.py`, a relative Markdown link: what a reader of a clone would open.
NAMED_PATH = re.compile(r"`((?:docs|bench|loadtest|packages|services|apps|testing)/[\w./-]+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def exists(path: str) -> bool:
    """A file or folder of the repository; a script may be named without its `.py`."""
    return (ROOT / path).exists() or (ROOT / f"{path}.py").exists()


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_file_a_page_names_exists_in_the_repository(page):
    text = page.read_text()
    named = [path for path in NAMED_PATH.findall(text) if "*" not in path and "<" not in path]
    missing = [path for path in named if not exists(path.rstrip("."))]
    links = [link for link in LINK.findall(text) if not link.startswith(("http://", "https://", "mailto:"))]
    broken = [link for link in links if not (page.parent / link).resolve().exists()]
    assert missing == []
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_points_outside_the_repository_or_to_the_plan(page):
    text = page.read_text()
    assert "../shared" not in text
    assert "DESIGN.md" not in text
    assert not re.search(r"\bthe plan\b", text, re.IGNORECASE)


def test_the_readme_lists_every_page_of_docs():
    readme = (ROOT / "README.md").read_text()
    docs_section = readme.split("\n## Docs", 1)[1]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"`docs/{page.name}`" in docs_section
    assert "`docs/decisions/`" in docs_section
