from pathlib import Path

from sophia.core.event_types import events_markdown

EVENTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def test_docs_events_md_is_what_the_registry_generates():
    # Regenerate with: uv run --frozen python -m sophia.core.event_types > docs/events.md
    assert EVENTS_DOC.read_text() == events_markdown()
