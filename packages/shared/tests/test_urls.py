"""Engine URLs in logs carry no password."""

import pytest

from sophia.shared.urls import without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://sophia:s3cr%40t@127.0.0.1:4222", "nats://sophia:***@127.0.0.1:4222"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("nats://a:x@h1:1,nats://a:y@h2:2", "nats://a:***@h1:1,nats://a:***@h2:2"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://s3cr3ttoken@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),  # a token
        ("tls://tok:@h1:1,nats://a:y@h2:2", "tls://***@h1:1,nats://a:***@h2:2"),
        ("postgresql://sophia@127.0.0.1:5432/db", "postgresql://sophia@127.0.0.1:5432/db"),  # a user
        (
            "postgresql://u:p@[::1]:5432/db?sslmode=require",
            "postgresql://u:***@[::1]:5432/db?sslmode=require",
        ),
        (  # libpq takes the password as a parameter too
            "postgresql://h/db?user=u&password=p&sslpassword=q&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslpassword=***&sslmode=require",
        ),
    ],
)
def test_a_password_is_never_shown_and_the_rest_is(url, shown):
    assert without_password(url) == shown
