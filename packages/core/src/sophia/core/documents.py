"""What every JSON document Sophia stores or forwards must be: one set of limits, so every path agrees.

Parsers and writers disagree at the edges: Python's `json` takes a lone surrogate (`"\\ud800"`) that
orjson, PostgreSQL and UTF-8 refuse; PostgreSQL's jsonb nests deeper than orjson writes (255 levels)
or pydantic's parser reads (200). A document is checked here once, where it arrives, so that nothing
accepted fails later on its way to the catalog, a stream or a client.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

MAX_DEPTH = 128
"""Deepest nesting of objects and arrays in a record's data or an event's payload: under every
parser's and writer's limit, with room for the envelope around it."""

Location = tuple[str | int, ...]


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored or sent as UTF-8 text, or None."""
    if "\x00" in text:
        return "text may not contain NUL characters"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        return f"holds a lone surrogate (U+{code:04X}) at character {error.start}, which is not text"
    return None


def printable(text: str) -> str:
    """`text` with what cannot be sent as UTF-8 escaped (`\\ud800`), to name it in an error."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def document_problem(value: Any, max_depth: int = MAX_DEPTH) -> tuple[Location, str] | None:
    """The first thing in `value` that some engine or client could not take, with where it is:
    nesting deeper than `max_depth`, NaN or Infinity, NUL or a lone surrogate in a key or a text."""
    pending: list[tuple[Any, Location]] = [(value, ())]
    while pending:
        item, where = pending.pop()
        if isinstance(item, dict | list):
            if len(where) >= max_depth:
                return where, f"nested deeper than {max_depth} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str) and (problem := text_problem(key)):
                    return (*where, printable(key)), f"the key {problem.removeprefix('text ')}"
                pending.append((child, (*where, key)))
        elif isinstance(item, str):
            if problem := text_problem(item):
                return where, problem
        elif isinstance(item, float) and not math.isfinite(item):
            return where, "NaN and Infinity are not JSON numbers"
    return None


def describe(where: Location) -> str:
    """A location as `data.deals.0.stage`, shortened in the middle past 8 parts."""
    parts = [str(part) for part in where]
    if len(parts) > 8:
        return f"{'.'.join(parts[:5])}...({len(parts) - 7} more)...{'.'.join(parts[-2:])}"
    return ".".join(parts)


_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"[]{}')))
"""Every byte but quotes and brackets, deleted to keep only what tells the nesting."""

_STEPS = bytes.maketrans(b"[{]}", bytes([1, 1, 255, 255]))
"""Brackets as signed bytes: 1 opens a level, 255 (-1 as a signed byte) closes one."""


def nesting_possible(raw: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether `raw` (valid JSON: parse it first) may nest objects and arrays deeper than
    `max_depth`: the cheap screen that decides whether the walk (`document_problem`) is needed.

    Never False for a document nested too deep. The answer comes from the deepest nesting of the
    brackets outside strings (`bracket_depth`), not from how many there are, so a large batch of
    shallow documents is spared the walk however many brackets it holds in all."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # too few brackets in all: spares the passes below for almost every small document
    return bracket_depth(raw) > max_depth


def bracket_depth(raw: bytes) -> int:
    """The deepest nesting of objects and arrays in `raw` (which must be valid JSON): 0 for a
    scalar, 1 for `[]` or `{"a": 1}`. Linear in `len(raw)`."""
    if b"\\" in raw:
        # An escaped quote (`\"`) would be taken for the end of its string. JSON puts backslashes
        # only inside strings, where each starts an escape of the next character, so dropping the
        # escaped backslashes first, pairs from the left, leaves exactly the escaped quotes to drop.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(None, _NOT_MARKS)
    # Two quotes side by side hold nothing between them: dropping them keeps every bracket on its
    # side of the strings and leaves few pieces to split (only strings that hold brackets).
    marks = marks.replace(b'""', b"")
    # Only the pieces between strings count: a `]` in a text would lower the depth of all after it.
    structure = b"".join(marks.split(b'"')[::2])
    steps = memoryview(structure.translate(_STEPS)).cast("b")  # +1 per opening, -1 per closing
    return max(accumulate(steps), default=0)
