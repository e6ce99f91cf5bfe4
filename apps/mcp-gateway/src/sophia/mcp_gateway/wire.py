"""JSON as the SDK reads and writes it, at orjson's speed where it can: the gateway's lean paths
(`fast`, `direct`) must neither round an integer past 64 bits (orjson reads one as a float and
will not write one) nor refuse what the SDK accepts."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic_core import from_json


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits: the standard library writes it exactly
        return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes | bytearray) -> Any:
    """`ValueError` if it is not JSON; integers of any size exact (pydantic's parser, as the SDK's)."""
    return from_json(data, allow_inf_nan=True)
