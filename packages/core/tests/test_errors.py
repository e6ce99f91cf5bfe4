from sophia.core.errors import FieldError, Invalid, SophiaError, Unavailable


def test_errors_carry_their_detail_and_share_a_base():
    error = Invalid("bad", [FieldError(("line", 3, "kind"), "not a string")])
    assert isinstance(error, SophiaError)
    assert error.detail == "bad"
    assert error.errors[0].location == ("line", 3, "kind")


def test_unavailable_says_when_to_retry():
    assert Unavailable("down", retry_after_s=7).retry_after_s == 7
    assert Invalid("no details").errors == []
