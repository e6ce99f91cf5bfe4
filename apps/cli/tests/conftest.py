"""What the CLI tests share: the environment a `sophia` command reads, on this test's streams."""

import pytest


@pytest.fixture
def env(own, tmp_path) -> dict[str, str]:
    """`SOPHIA_*` for a command run by the test: its engines, its data dir, its stream prefix
    (`own` is each module's settings on streams of the test's own)."""
    return {
        "SOPHIA_DATABASE_URL": own.database_url,
        "SOPHIA_NATS_URL": own.nats_url,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_EVENTS_STREAM_PREFIX": own.events_stream_prefix,
    }
