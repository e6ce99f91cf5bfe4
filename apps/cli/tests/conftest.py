"""What the CLI tests share: the environment a `sophia` command reads, on this test's streams."""

from pathlib import Path

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


@pytest.fixture
def ml_data_dir(tmp_path: Path, models_dir: Path) -> Path:
    """A data directory of the test's own, holding the run's built graph (linked, not rebuilt)."""
    from sophia.ml.encoder import ModelFiles, ensure_onnx_model

    directory = tmp_path / "data"
    (directory / "models").mkdir(parents=True)
    graph = ensure_onnx_model(ModelFiles.from_package(), models_dir, quantized=True)
    (directory / "models" / graph.name).symlink_to(graph)
    return directory


@pytest.fixture
def own(own_streams, monkeypatch):
    """Streams of this test's own, and consoles wide enough for whole lines (a module may define
    its own `own`)."""
    from sophia.cli import dlq, jobs, keys

    for console in (keys.console, jobs.console, dlq.console):
        monkeypatch.setattr(console, "width", 200)
    return own_streams
