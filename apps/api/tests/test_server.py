"""`python -m sophia.api.server`: what the server process prepares for its workers before serving."""

from __future__ import annotations

import os
from pathlib import Path

from sophia.api import server


def test_several_workers_get_a_fresh_metrics_directory_that_is_removed_when_serving_ends(
    settings, monkeypatch, tmp_path
):
    seen: dict[str, object] = {}

    def run(served) -> None:  # in place of granian or uvicorn, which would serve until stopped
        directory = Path(os.environ[server.MULTIPROCESS_DIR_VARIABLE])
        seen.update(
            directory=directory, files=sorted(directory.iterdir()), pid=os.environ["SOPHIA_SERVER_PID"]
        )

    monkeypatch.setattr(server, "_run", run)
    # Recorded as unset, so both variables that serve() exports are gone again after the test.
    for name in (server.MULTIPROCESS_DIR_VARIABLE, "SOPHIA_SERVER_PID"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    left_over = tmp_path / "metrics" / f"api-{os.getpid()}"
    left_over.mkdir(parents=True)
    (left_over / "counter_1.db").write_bytes(b"a dead server's samples")

    server.serve(settings.model_copy(update={"api_workers": 2, "data_dir": tmp_path}))

    assert seen == {"directory": left_over, "files": [], "pid": str(os.getpid())}
    assert not left_over.exists()
