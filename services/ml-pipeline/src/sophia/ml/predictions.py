"""Predictions in the tiered cache: one entry per (model, model version, task, input), for an hour.

The key is a blake2b digest of those four, so it is the same in every process and every run
(Python's `hash()` of a string is salted per process) and says nothing of the input itself. A new
model version gets new keys: nothing computed by the old model is served for the new one.
"""

from __future__ import annotations

import hashlib

TTL_CLASS = "ml"
"""The cache's TTL class of predictions (`SOPHIA_CACHE_TTL_ML_S`, an hour by default)."""


def prediction_key(model_id: str, model_version: str, task: str, text: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (model_id, model_version, task):
        digest.update(part.encode())
        digest.update(b"\x00")  # a separator no identifier holds: ("a", "bc") != ("ab", "c")
    digest.update(text.encode())
    return f"ml:{task}:{digest.hexdigest()}"
