from pathlib import Path

from sophia.core.event_types import events_markdown

EVENTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def test_docs_events_md_is_what_the_registry_generates():
    # Regenerate with: .venv/bin/python -m sophia.core.event_types > docs/events.md
    assert EVENTS_DOC.read_text() == events_markdown()


def test_the_regeneration_command_prints_the_generated_document():
    import subprocess
    import sys

    printed = subprocess.run(
        [sys.executable, "-m", "sophia.core.event_types"], capture_output=True, text=True, check=True
    )
    assert printed.stdout == events_markdown()
