"""Hypothesis strategies of JSON documents, for the property tests that compare two readers of one
body (a fast check against the schema, a front door against the route)."""

from __future__ import annotations

from hypothesis import strategies as st


def json_values(
    scalars: st.SearchStrategy[object], *, key_size: int, max_leaves: int
) -> st.SearchStrategy[object]:
    """`scalars`, and lists and objects of them (at most three members each, keys of up to
    `key_size` characters), nested up to `max_leaves` scalars in all."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=key_size), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )
