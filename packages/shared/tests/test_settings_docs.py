from pathlib import Path

from sophia.shared.settings import settings_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_settings_table_matches_the_code():
    text = README.read_text()
    start = text.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    end = text.index("<!-- /settings-table -->")
    assert text[start:end].strip() == settings_table()
