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
