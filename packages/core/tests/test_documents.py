"""One set of limits for documents: each problem found with where it is, in any order of nesting."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sophia.core.documents import (
    MAX_DEPTH,
    bracket_depth,
    describe,
    document_problem,
    nesting_possible,
    text_problem,
)


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


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
    assert nesting_possible(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert not nesting_possible(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)


def test_a_large_batch_of_shallow_events_is_spared_the_walk_however_many_brackets_it_holds():
    event = {"type": "user.event", "key": "u-1", "payload": {"name": "n", "properties": {"tags": ["a", "b"]}}}
    batch = orjson.dumps([event] * 10_000)
    assert batch.count(b"[") + batch.count(b"{") > 100 * MAX_DEPTH
    assert bracket_depth(batch) == 5
    assert not nesting_possible(batch)


def test_one_deep_document_in_a_large_batch_is_still_caught():
    shallow = {"type": "user.event", "key": "u-1", "payload": {"name": "n"}}
    deep = {"type": "user.event", "key": "u-2", "payload": {"deep": nested(MAX_DEPTH)}}
    assert nesting_possible(orjson.dumps([shallow] * 5_000 + [deep] + [shallow] * 5_000))


@pytest.mark.parametrize(
    "text",
    ["]" * 300, "}" * 300, '\\"]]]', '"]]]', "\\", "\\\\]", "[[[", '\\"[[['],
    ids=[
        "closings",
        "braces",
        "backslash-quote-closings",
        "quote-closings",
        "backslash",
        "backslashes-closing",
        "openings",
        "backslash-quote-openings",
    ],
)
def test_brackets_and_quotes_inside_text_neither_hide_depth_nor_add_to_it(text):
    document = {"before": text, "deep": nested(MAX_DEPTH + 1), "after": [text, {text: text}]}
    for raw in (orjson.dumps(document), json.dumps(document, ensure_ascii=True).encode()):
        assert bracket_depth(raw) == MAX_DEPTH + 2
        assert nesting_possible(raw)
    assert bracket_depth(orjson.dumps({"before": text, "shallow": [[1]]})) == 3


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet='[]{}"\\ab\n\u00e9\U0001f680'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=4)
    ),
    max_leaves=40,
)


def check_bracket_depth(value: object, escaped: bool) -> None:
    raw = json.dumps(value).encode() if escaped else orjson.dumps(value)  # `\\u00e9` or UTF-8
    assert bracket_depth(raw) == depth(value)


@settings(max_examples=100, deadline=None)  # generating the documents is most of its 0.3 s
@given(value=json_values, escaped=st.booleans())
def test_bracket_depth_is_the_nesting_of_any_document(value, escaped):
    check_bracket_depth(value, escaped)


@pytest.mark.load  # the same, 2,000 documents
@settings(max_examples=2000, deadline=None)
@given(value=json_values, escaped=st.booleans())
def test_bracket_depth_is_the_nesting_of_many_more_documents(value, escaped):
    check_bracket_depth(value, escaped)
