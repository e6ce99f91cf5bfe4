from datetime import UTC, datetime
from uuid import uuid4

import pytest

from sophia.core.records import Record, RecordKey, is_identifier


@pytest.mark.parametrize("value", ["hubspot", "deal", "x", "gong-v2", "a_b", "a" * 63])
def test_identifiers_are_lowercase_words(value):
    assert is_identifier(value)


@pytest.mark.parametrize("value", ["", "HubSpot", "1crm", "a b", "a/b", "a" * 64, "deal;drop"])
def test_anything_else_is_not_an_identifier(value):
    assert not is_identifier(value)


def test_record_key_is_its_natural_key():
    now = datetime.now(UTC)
    record = Record(uuid4(), "hubspot", "deal", "d-1", {}, now, now, 1)
    assert record.key == RecordKey("hubspot", "deal", "d-1")
