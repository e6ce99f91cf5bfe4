"""Opaque keyset cursors: the last id seen, bound to the filter that produced it."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar
from uuid import UUID

from sophia.core.errors import FieldError, Invalid

_VERSION = "1"

T = TypeVar("T")


def filter_fingerprint(*parts: object) -> str:
    """A short stable digest of a filter, so a cursor cannot be replayed against another one."""
    text = "\x1f".join(repr(part) for part in parts)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def encode_cursor(last_id: UUID, fingerprint: str) -> str:
    raw = f"{_VERSION}.{last_id.hex}.{fingerprint}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> UUID:
    """The id to continue after; `Invalid` if the cursor is damaged or from another filter."""
    bad = Invalid(
        "The cursor is not valid for this query; start again without it.",
        [FieldError(("query", "cursor"), "malformed or issued for different filters")],
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        version, id_hex, issued_for = base64.urlsafe_b64decode(padded).decode().split(".")
        last_id = UUID(hex=id_hex)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if version != _VERSION or issued_for != fingerprint:
        raise bad
    if encode_cursor(last_id, fingerprint) != cursor:
        # Only the spelling we issue: the decoder skips characters outside base64 and takes other
        # paddings and id spellings, and each spelling of one cursor would be a page cached apart.
        raise bad
    return last_id


def split_page(
    rows: Sequence[T], limit: int, id_of: Callable[[T], UUID], fingerprint: str
) -> tuple[Sequence[T], str | None]:
    """The page out of `limit + 1` fetched rows, and the cursor of the next page (None at the end)."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(id_of(page[-1]), fingerprint)
