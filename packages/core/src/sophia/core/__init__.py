"""Sophia's domain: records, errors and cursors. Pure: no I/O, no frameworks."""

from sophia.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    SophiaError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "Conflict",
    "FieldError",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PreconditionFailed",
    "SophiaError",
    "Unauthorized",
    "Unavailable",
]
