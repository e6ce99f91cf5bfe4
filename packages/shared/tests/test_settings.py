import pytest
from pydantic import ValidationError

from sophia.shared.settings import Settings


def test_settings_come_from_sophia_environment_variables(monkeypatch):
    monkeypatch.setenv("SOPHIA_DB_POOL_MAX_SIZE", "17")
    monkeypatch.setenv("SOPHIA_API_SERVER", "uvicorn")
    settings = Settings()
    assert settings.db_pool_max_size == 17
    assert settings.api_server == "uvicorn"


def test_bad_values_are_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv("SOPHIA_API_SERVER", "gunicorn")
    with pytest.raises(ValidationError, match="api_server"):
        Settings()


def test_every_setting_is_documented():
    assert all(field.description for field in Settings.model_fields.values())


def test_model_threads_share_the_cpus_out_over_the_api_workers(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert Settings(api_workers=2).model_threads == 2  # 5 CPUs, 2 copies of the model: 2 threads each
    assert Settings(api_workers=8).model_threads == 1  # never none
    assert Settings(api_workers=2, ml_threads=3).model_threads == 3  # set: taken as given
