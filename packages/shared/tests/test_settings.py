import pytest
from pydantic import ValidationError

from sophia.shared.settings import Settings, available_cpus


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


def test_model_threads_share_the_cpus_out_over_the_api_workers(monkeypatch, tmp_path):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    monkeypatch.setattr("sophia.shared.settings.CPU_QUOTA", tmp_path / "no-cgroup")  # whatever runs the test
    assert Settings(api_workers=2).model_threads == 2  # 5 CPUs, 2 copies of the model: 2 threads each
    assert Settings(api_workers=8).model_threads == 1  # never none
    assert Settings(api_workers=2, ml_threads=3).model_threads == 3  # set: taken as given


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("max 100000\n", 5),  # no quota: the affinity's 5
        ("200000 100000\n", 2),  # 2 CPUs' worth
        ("150000 100000\n", 1),  # 1.5: whole threads only
        ("50000 100000\n", 1),  # half a CPU: still one thread
        ("1000000 100000\n", 5),  # a quota above the affinity: the affinity
        (None, 5),  # no cgroup v2 file
    ],
)
def test_the_cpus_available_are_the_affinity_capped_by_the_containers_quota(
    monkeypatch, tmp_path, cpu_max, cpus
):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    quota = tmp_path / "cpu.max"
    if cpu_max is not None:
        quota.write_text(cpu_max)
    assert available_cpus(quota) == cpus


def test_repr_shows_every_url_without_its_password():
    settings = Settings(
        database_url="postgresql://sophia:pg-secret-1@127.0.0.1:5432/sophia",
        redis_url="redis://:valkey-secret-2@127.0.0.1:6379/0",
        nats_url="nats://sophia:nats-secret-3@127.0.0.1:4222,nats://sophia:nats-secret-3@127.0.0.1:4223",
    )
    shown = repr(settings) + str(settings)
    for secret in ("pg-secret-1", "valkey-secret-2", "nats-secret-3"):
        assert secret not in shown
    assert "postgresql://sophia:***@127.0.0.1:5432/sophia" in shown
    assert "redis://:***@127.0.0.1:6379/0" in shown
    assert settings.database_url == "postgresql://sophia:pg-secret-1@127.0.0.1:5432/sophia"  # only shown so
