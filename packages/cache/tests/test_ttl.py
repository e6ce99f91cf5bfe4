import pytest

from sophia.cache import CacheConfig, TtlClass


def test_the_default_classes_are_the_plans() -> None:
    config = CacheConfig()
    assert config.ttl_class("session").fresh_s == 300
    assert config.ttl_class("api").fresh_s == 60
    assert config.ttl_class("static").fresh_s == 3600


def test_an_explicit_ttl_overrides_freshness_and_keeps_the_stale_windows() -> None:
    config = CacheConfig(ttl_classes={"api": TtlClass(60, 10, 300)})
    assert config.ttl_class("api", ttl_s=5) == TtlClass(5, 10, 300)


def test_an_unknown_class_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="api"):
        CacheConfig().ttl_class("nope")


def test_the_channel_lives_under_the_key_prefix() -> None:
    assert CacheConfig(key_prefix="p:").channel == "p:invalidate"


def test_the_settings_give_each_class_its_freshness_and_the_shared_stale_windows() -> None:
    from sophia.shared.settings import Settings

    settings = Settings(
        cache_ttl_session_s=120,
        cache_ttl_api_s=30,
        cache_ttl_record_s=240,
        cache_ttl_static_s=600,
        cache_stale_if_error_s=90,
    )
    config = CacheConfig.from_settings(settings)
    assert config.ttl_class("session") == TtlClass(120, 20, 90)
    assert config.ttl_class("api") == TtlClass(30, 5, 90)
    assert config.ttl_class("record") == TtlClass(240, 40, 90)
    assert config.ttl_class("static") == TtlClass(600, 100, 90)
    assert config.lock_s == settings.cache_lock_s
    assert config.l1_max_bytes == settings.cache_l1_max_bytes
    assert config.key_prefix == settings.cache_key_prefix
