import pytest

from sophia.core.records import is_identifier


@pytest.mark.parametrize("value", ["hubspot", "deal", "x", "gong-v2", "a_b", "a" * 63])
def test_identifiers_are_lowercase_words(value):
    assert is_identifier(value)


@pytest.mark.parametrize("value", ["", "HubSpot", "1crm", "a b", "a/b", "a" * 64, "deal;drop"])
def test_anything_else_is_not_an_identifier(value):
    assert not is_identifier(value)
