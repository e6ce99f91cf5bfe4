"""The load tier's OpenAPI fuzz run: schemathesis's boundary cases for every operation (bounds,
formats, missing and unexpected fields), then a hundred fuzzed cases each: never a 5xx.

The file's name puts it in the load tier: the other tiers do not import it (see `conftest.py`).
"""

from __future__ import annotations

import pytest
import schemathesis
from fuzzing import OPENAPI, admin_headers, fuzz_config, fuzzed_app, fuzzed_database
from schemathesis.checks import not_a_server_error

__all__ = ["admin_headers", "fuzzed_app", "fuzzed_database"]  # fixtures the test below uses

pytestmark = pytest.mark.load

deep_schema = schemathesis.openapi.from_dict(OPENAPI, config=fuzz_config(100, coverage=True))


@deep_schema.parametrize()
def test_no_operation_answers_with_a_server_error_at_its_bounds_or_fuzzed_deeper(
    case, fuzzed_app, admin_headers
):
    case.call_and_validate(app=fuzzed_app, headers=admin_headers, checks=[not_a_server_error])
