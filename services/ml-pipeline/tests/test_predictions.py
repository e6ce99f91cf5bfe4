"""Prediction cache keys: the same in every process (Python's str hash is salted per process, the
key must not be), different for any other model, version, task or text."""

from __future__ import annotations

import os
import subprocess
import sys

from sophia.ml.predictions import prediction_key

ARGS = ("all-MiniLM-L6-v2", "onnx-int8-b1", "embed", "Renewal at risk: the champion left. ☹")


def in_a_new_process(expression: str, hash_seed: str) -> str:
    code = f"from sophia.ml.predictions import prediction_key; print({expression})"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_key_is_the_same_in_every_process_whatever_its_hash_seed():
    key = f"prediction_key(*{ARGS!r})"
    assert in_a_new_process(key, "1") == in_a_new_process(key, "2") == prediction_key(*ARGS)
    salted = f"hash({ARGS[3]!r})"  # what the key must not rest on: another number in each process
    assert in_a_new_process(salted, "1") != in_a_new_process(salted, "2")


def test_any_other_model_version_task_or_text_is_another_key_and_the_text_does_not_show():
    key = prediction_key(*ARGS)
    others = {
        prediction_key("other-model", *ARGS[1:]),
        prediction_key(ARGS[0], "onnx-fp32-b1", *ARGS[2:]),
        prediction_key(*ARGS[:2], "sentiment", ARGS[3]),
        prediction_key(*ARGS[:3], ARGS[3] + " "),
        prediction_key("all-MiniLM-L6-v2o", "nnx-int8-b1", *ARGS[2:]),  # parts do not run together
    }
    assert key not in others
    assert len(others) == 5
    assert key.startswith("ml:embed:")
    assert "champion" not in key
    assert len(key) == len("ml:embed:") + 32  # blake2b, 16 bytes
