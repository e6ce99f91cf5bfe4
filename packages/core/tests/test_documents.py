"""One set of limits for documents: each problem found with where it is, in any order of nesting."""

import pytest

from sophia.core.documents import MAX_DEPTH, describe, document_problem, nesting_possible, text_problem


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"a": [1, "ok", {"b": None}]}, None),
        ({"a": {"b": "x\x00y"}}, (("a", "b"), "text may not contain NUL characters")),
        ({"a": [1, float("nan")]}, (("a", 1), "NaN and Infinity are not JSON numbers")),
        ({"a": "\ud800"}, (("a",), "holds a lone surrogate (U+D800) at character 0, which is not text")),
        (
            {"\udfff": 1},
            (("\\udfff",), "the key holds a lone surrogate (U+DFFF) at character 0, which is not text"),
        ),
        ({"k\x00": 1}, (("k\\x00",), "the key may not contain NUL characters")),
    ],
    ids=["fine", "nul", "nan", "surrogate", "surrogate-key", "nul-key"],
)
def test_the_first_problem_is_named_with_its_location(document, expected):
    assert document_problem(document) == expected


def test_nesting_counts_objects_and_arrays_and_stops_one_past_the_limit():
    assert document_problem(nested(MAX_DEPTH)) is None
    where, problem = document_problem(nested(MAX_DEPTH + 1))
    assert (where, problem) == ((0,) * MAX_DEPTH, f"nested deeper than {MAX_DEPTH} levels")
    assert document_problem({"a": nested(MAX_DEPTH - 1)}) is None
    assert document_problem({"a": nested(MAX_DEPTH)}) is not None


def test_text_problems_spare_plain_and_accented_text():
    assert text_problem("plain ascii") is None
    assert text_problem("Grüße, 東京 🚀") is None
    assert text_problem("pair \ud83d\ude80 joined by Python? no: two lone halves") is not None


def test_a_long_location_is_shortened_in_the_middle():
    assert describe(("data", "a", 0)) == "data.a.0"
    assert describe(tuple(range(20))) == "0.1.2.3.4...(13 more)...18.19"


def test_brackets_tell_cheaply_whether_nesting_could_be_too_deep():
    assert not nesting_possible(b'{"a": [1, 2, {"b": []}]}')
    assert nesting_possible(b"[" * (MAX_DEPTH + 1))
