"""NDJSON bodies are split into numbered lines wherever the chunks happen to break them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sophia.api.records.service import split_lines
from sophia.core.errors import Invalid


async def chunked(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    edges = [0, *sorted({cut % (len(body) + 1) for cut in cuts}), len(body)]
    for start, end in itertools.pairwise(edges):
        yield body[start:end]


async def split(body: bytes, cuts: list[int], max_line_bytes: int = 1_000) -> list[tuple[int, bytes]]:
    return [line async for line in split_lines(chunked(body, cuts), max_line_bytes)]


CUT_BODIES = {
    "lines": st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    "cuts": st.lists(st.integers(min_value=0, max_value=400), max_size=30),
    "final_newline": st.booleans(),
}


@settings(max_examples=100, deadline=None)  # half the load tier's run
@given(**CUT_BODIES)
async def test_lines_come_out_whole_and_numbered_however_the_body_is_cut(lines, cuts, final_newline):
    await lines_come_out_whole_and_numbered(lines, cuts, final_newline)


@pytest.mark.load
@settings(max_examples=200, deadline=None)
@given(**CUT_BODIES)
async def test_lines_come_out_whole_and_numbered_however_the_body_is_cut_thoroughly(
    lines, cuts, final_newline
):
    await lines_come_out_whole_and_numbered(lines, cuts, final_newline)


async def lines_come_out_whole_and_numbered(lines: list[bytes], cuts: list[int], final_newline: bool) -> None:
    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected = list(enumerate(body.split(b"\n"), 1))
    if expected and not expected[-1][1].strip():
        expected.pop()  # a last line holding nothing (the final newline's) is not a line
    assert await split(body, cuts) == expected


async def test_a_line_longer_than_the_limit_is_refused_naming_it_even_before_it_ends():
    with pytest.raises(Invalid, match="Line 2 is longer than 10 bytes"):
        await split(b"short\n" + b"x" * 50 + b"\nmore", cuts=list(range(0, 60, 3)), max_line_bytes=10)
    with pytest.raises(Invalid, match="Line 2 is longer than 10 bytes"):
        await split(b"short\n" + b"x" * 11 + b"\n", cuts=[], max_line_bytes=10)


async def test_a_line_arriving_a_byte_at_a_time_is_joined_once():
    body = b'{"a": 1}\n' + b"y" * 5_000 + b"\n"
    assert await split(body, cuts=list(range(len(body))), max_line_bytes=10_000) == [
        (1, b'{"a": 1}'),
        (2, b"y" * 5_000),
    ]
