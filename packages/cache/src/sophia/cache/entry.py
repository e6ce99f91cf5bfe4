"""A cached value with its metadata, and its compact encoding for Redis (header + bytes)."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from sophia.cache.ttl import TtlClass

# version, flags, fresh, revalidate, stale (wall-clock epoch seconds), etag length, tag count
_HEADER = struct.Struct("!BBdddHH")
_LENGTH = struct.Struct("!H")
_VERSION = 1
_MISSING = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """Bytes plus when they stop being fresh, revalidatable and servable at all (monotonic times).

    `missing` marks a cached "not found": `value` then holds the error's detail.
    """

    value: bytes
    etag: str
    fresh_until: float
    revalidate_until: float
    stale_until: float
    tags: tuple[str, ...] = ()
    missing: bool = False

    @property
    def size(self) -> int:
        return len(self.value)


def make_etag(value: bytes) -> str:
    """A strong validator for `value` (hex, unquoted)."""
    return hashlib.blake2b(value, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a loader may return instead of bare bytes: the value with a validator of its own
    (the API passes a record's version, so GET's ETag is the one `If-Match` accepts)."""

    value: bytes
    etag: str


def make_entry(
    value: bytes,
    ttl_class: TtlClass,
    now: float,
    tags: tuple[str, ...] = (),
    *,
    missing: bool = False,
    etag: str | None = None,
) -> Entry:
    fresh_until = now + ttl_class.fresh_s
    return Entry(
        value=value,
        etag=etag if etag is not None else make_etag(value),
        fresh_until=fresh_until,
        revalidate_until=fresh_until + ttl_class.stale_while_revalidate_s,
        stale_until=fresh_until + max(ttl_class.stale_while_revalidate_s, ttl_class.stale_if_error_s),
        tags=tags,
        missing=missing,
    )


def encode(entry: Entry, now: float, wall: Callable[[], float] = time.time) -> bytes:
    """Header + etag + tags + value; monotonic times become epoch times other processes can read."""
    offset = wall() - now
    etag = entry.etag.encode()
    tags = [tag.encode() for tag in entry.tags]
    header = _HEADER.pack(
        _VERSION,
        _MISSING if entry.missing else 0,
        entry.fresh_until + offset,
        entry.revalidate_until + offset,
        entry.stale_until + offset,
        len(etag),
        len(tags),
    )
    parts = [header, etag]
    for tag in tags:
        parts += [_LENGTH.pack(len(tag)), tag]
    parts.append(entry.value)
    return b"".join(parts)


def decode(blob: bytes, now: float, wall: Callable[[], float] = time.time) -> Entry | None:
    """The entry in `blob`, its times back on this process's monotonic clock; None if unreadable."""
    if len(blob) < _HEADER.size or blob[0] != _VERSION:
        return None
    _, flags, fresh, revalidate, stale, etag_length, tag_count = _HEADER.unpack_from(blob)
    position = _HEADER.size
    etag = blob[position : position + etag_length].decode()
    position += etag_length
    tags = []
    for _ in range(tag_count):
        (length,) = _LENGTH.unpack_from(blob, position)
        position += _LENGTH.size
        tags.append(blob[position : position + length].decode())
        position += length
    offset = now - wall()
    return Entry(
        value=blob[position:],
        etag=etag,
        fresh_until=fresh + offset,
        revalidate_until=revalidate + offset,
        stale_until=stale + offset,
        tags=tuple(tags),
        missing=bool(flags & _MISSING),
    )
