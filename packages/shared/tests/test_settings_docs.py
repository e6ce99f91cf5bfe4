from pathlib import Path

from sophia.shared.settings import settings_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_settings_table_matches_the_code():
    text = README.read_text()
    start = text.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    end = text.index("<!-- /settings-table -->")
    assert text[start:end].strip() == settings_table()


def test_running_the_settings_module_prints_the_table_for_the_readme():
    import subprocess
    import sys

    printed = subprocess.run(
        [sys.executable, "-m", "sophia.shared.settings"], capture_output=True, text=True, check=True
    )
    assert printed.stdout == settings_table() + "\n"
